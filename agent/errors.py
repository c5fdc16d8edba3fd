"""Domain errors. Every message says what happened and what to do next.

Connectors raise :class:`AuthError`, :class:`TransientError`, :class:`RateLimited` or
plain :class:`SourceError`; the sync engine decides whether to retry, back off or give up.
"""

from __future__ import annotations


class RetainerError(Exception):
    """Base of every error Retainer reports to the user (never with a traceback)."""

    exit_code = 1


class ConfigError(RetainerError):
    """The config file is missing, unreadable or invalid."""


class UsageError(RetainerError):
    """A command-line value is out of range or names something that is not there."""

    exit_code = 2


class SecretError(ConfigError):
    """A secret reference could not be resolved."""


class PluginError(RetainerError):
    """A plugin could not be loaded or registered something invalid."""


class StoreError(RetainerError):
    """The local store is unreadable, locked or could not be written."""


class NoSpace(StoreError):
    """The disk of the data folder is full (ENOSPC or quota): the next sync may succeed."""


class StoreLocked(StoreError):
    """Another Retainer process holds the data folder."""

    exit_code = 75


class SourceError(RetainerError):
    """A source failed to sync. Connectors raise this or one of its subclasses."""


class AuthError(SourceError):
    """The credentials were refused. Retrying will not help until the user acts."""


class TransientError(SourceError):
    """A temporary failure (network, 5xx, timeout): the next attempt may succeed."""


class RateLimited(TransientError):
    """The remote service asked us to slow down."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnsupportedOperation(SourceError):
    """The platform cannot do what was asked (for example, sending a message)."""
