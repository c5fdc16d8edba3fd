"""The builtin ``imap`` platform passes the plugin contract kit against a real Dovecot."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

import plugins.imap
from agent.testing import ConnectorContract, RemoteFixture
from tests.contract.tcpproxy import TcpProxy
from tests.servers.dovecot import PASSWORD_ENV, Mailbox

_serial = itertools.count(1)


class ImapRemote(RemoteFixture):
    """A fresh Dovecot user, reached through a relay the test can cut."""

    plugin = plugins.imap
    platform = "imap"

    def __init__(self, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mailbox = mailbox
        self.monkeypatch = monkeypatch
        monkeypatch.setenv(PASSWORD_ENV, mailbox.password)
        self.proxy = TcpProxy((mailbox.server.host, mailbox.server.port))

    def settings(self) -> dict[str, Any]:
        return self.mailbox.settings(security="none", port=self.proxy.port, batch_size=2,
                                     max_reconnects=0, timeout=10)

    def _append(self, msg: EmailMessage) -> None:
        n = next(_serial)
        msg["From"] = "Maria Lopez <maria@example.com>"
        msg["To"] = "owner@example.com"
        msg["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
        msg["Message-ID"] = f"<imap-contract-{n}-{os.getpid()}@example.com>"
        self.mailbox.append("INBOX", msg.as_bytes())

    def add_message(self, text: str) -> None:
        msg = EmailMessage()
        msg["Subject"] = "Progress"
        msg.set_content(text + "\n")
        self._append(msg)

    def add_attachment(self, filename: str, data: bytes) -> None:
        msg = EmailMessage()
        msg["Subject"] = "Files"
        msg.set_content("see attached\n")
        msg.add_attachment(data, maintype="application", subtype="octet-stream",
                           filename=filename)
        self._append(msg)

    def break_auth(self) -> None:
        self.monkeypatch.setenv(PASSWORD_ENV, "not-" + self.mailbox.password)

    def break_transiently(self) -> None:
        self.proxy.cut()


@pytest.mark.dovecot
class TestImapContract(ConnectorContract):
    @pytest.fixture
    def remote(self, dovecot_mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[RemoteFixture]:
        remote = ImapRemote(dovecot_mailbox, monkeypatch)
        try:
            yield remote
        finally:
            remote.proxy.close()
