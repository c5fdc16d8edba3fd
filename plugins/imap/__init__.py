"""The ``imap`` platform: any IMAP4rev1 server (Dovecot, Gmail, Fastmail, Exchange...).

Reads new mail from the configured folders, incrementally by UIDVALIDITY and UID, with
certificate checks always on. See :mod:`plugins.imap.connector` for how a sync goes and
:mod:`plugins.imap.settings` for the options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.connector import NoOptions, Platform
from agent.plugins import hookimpl
from plugins.imap.connector import ImapConnector
from plugins.imap.settings import ImapSettings

if TYPE_CHECKING:
    from agent.oauth import OAuthClient

__all__ = ["ImapConnector", "ImapSettings", "register_platforms"]


def signin(settings: ImapSettings, source: str) -> OAuthClient | None:
    """``retainer auth SOURCE`` for a mailbox with auth = "oauth2"."""
    return settings.oauth_client(source)


@hookimpl
def register_platforms(register: Callable[[Platform], None]) -> None:
    register(Platform("imap", ImapConnector, ImapSettings,
                      "an IMAP mailbox (any IMAP4rev1 server, over TLS)", signin=signin,
                      options=NoOptions))
