"""The ``imap`` platform: any IMAP4rev1 server (Dovecot, Gmail, Fastmail, Exchange...).

Reads new mail from the configured folders, incrementally by UIDVALIDITY and UID, with
certificate checks always on. See :mod:`plugins.imap.connector` for how a sync goes and
:mod:`plugins.imap.settings` for the options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.connector import NoOptions, Platform
from agent.errors import ConfigError
from agent.plugins import hookimpl
from plugins.imap.connector import ImapConnector
from plugins.imap.settings import ImapSettings

if TYPE_CHECKING:
    from agent.oauth import OAuthClient

__all__ = ["ImapConnector", "ImapSettings", "register_platforms"]


def signin(settings: ImapSettings, source: str) -> OAuthClient:
    """``retainer auth SOURCE`` for a mailbox with auth = "oauth2"."""
    client = settings.oauth_client(source)
    if client is None:
        raise ConfigError(f'source "{source}" does not sign in with OAuth 2.0 (set auth = '
                          '"oauth2" in its settings to sign in with Google or Microsoft)')
    return client


@hookimpl
def register_platforms(register: Callable[[Platform], None]) -> None:
    register(Platform("imap", ImapConnector, ImapSettings,
                      "an IMAP mailbox (any IMAP4rev1 server, over TLS)", signin=signin,
                      options=NoOptions))
