"""The builtin ``imap`` platform passes the plugin contract kit against a real Dovecot."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import plugins.imap
from agent.testing import ConnectorContract, RemoteFixture
from tests.contract.mail_remote import MailRemote
from tests.contract.tcpproxy import TcpProxy
from tests.servers.dovecot import PASSWORD_ENV, Mailbox


class ImapRemote(MailRemote):
    """A fresh Dovecot user, reached through a relay the test can cut."""

    plugin = plugins.imap
    platform = "imap"
    id_prefix = "imap-contract"

    def __init__(self, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mailbox = mailbox
        self.monkeypatch = monkeypatch
        monkeypatch.setenv(PASSWORD_ENV, mailbox.password)
        self.proxy = TcpProxy((mailbox.server.host, mailbox.server.port))

    def settings(self) -> dict[str, Any]:
        return self.mailbox.settings(security="none", port=self.proxy.port, batch_size=2,
                                     max_reconnects=0, timeout=10)

    def deliver(self, raw: bytes, serial: int) -> None:
        self.mailbox.append("INBOX", raw)

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
