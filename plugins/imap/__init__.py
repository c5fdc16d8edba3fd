"""The ``imap`` platform: any IMAP4rev1 server (Dovecot, Gmail, Fastmail, Exchange...).

Reads new mail from the configured folders, incrementally by UIDVALIDITY and UID, with
certificate checks always on. See :mod:`plugins.imap.connector` for how a sync goes and
:mod:`plugins.imap.settings` for the options.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.connector import Platform
from agent.plugins import hookimpl
from plugins.imap.connector import ImapConnector
from plugins.imap.settings import ImapSettings

__all__ = ["ImapConnector", "ImapSettings", "register_platforms"]


@hookimpl
def register_platforms(register: Callable[[Platform], None]) -> None:
    register(Platform("imap", ImapConnector, ImapSettings,
                      "an IMAP mailbox (any IMAP4rev1 server, over TLS)"))
