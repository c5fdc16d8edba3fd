"""The ``maildir`` platform: a local Maildir, such as the ones mbsync and offlineimap keep.

Reads ``cur/`` and ``new/`` of the root folder (shown as ``INBOX``) and of every
subfolder, both Maildir++ (``.Sent``, ``.Clients.Acme``) and verbatim
(``Sent/``, ``Clients/Acme/``). Each message file is read once: the cursor remembers
the files already read by their unique name (the part before ``:2,flags``), so a
message moving from ``new/`` to ``cur/`` or getting new flags is not read again, and a
sync with nothing new only lists folders.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.connector import NoOptions, Platform
from agent.plugins import hookimpl
from plugins.maildir.connector import MaildirConnector, MaildirSettings
from plugins.maildir.demo import demo

__all__ = ["PLATFORM", "MaildirConnector", "MaildirSettings", "register_platforms"]


PLATFORM = Platform("maildir", MaildirConnector, MaildirSettings,
                    "a local Maildir (as mbsync or offlineimap keep it)", options=NoOptions,
                    demo=demo)


@hookimpl
def register_platforms(register: Callable[[Platform], None]) -> None:
    register(PLATFORM)
