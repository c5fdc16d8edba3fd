"""Retainer: keep your freelancers, their messages and their deliverables in one place.

This module is the public API for plugin authors.
"""

from __future__ import annotations

from agent.connector import Connector, Platform, Settings, SourceContext
from agent.errors import (
    AuthError,
    ConfigError,
    PluginError,
    RateLimited,
    RetainerError,
    SourceError,
    TransientError,
    UnsupportedOperation,
)
from agent.models import (
    Attachment,
    Contract,
    Cursor,
    Identity,
    Message,
    Outgoing,
    Page,
    Record,
    Submission,
)
from agent.plugins import hookimpl

__version__ = "0.1.0"

__all__ = [
    "Attachment",
    "AuthError",
    "ConfigError",
    "Connector",
    "Contract",
    "Cursor",
    "Identity",
    "Message",
    "Outgoing",
    "Page",
    "Platform",
    "PluginError",
    "RateLimited",
    "Record",
    "RetainerError",
    "Settings",
    "SourceContext",
    "SourceError",
    "Submission",
    "TransientError",
    "UnsupportedOperation",
    "hookimpl",
]
