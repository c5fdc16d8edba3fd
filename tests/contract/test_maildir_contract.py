"""The builtin ``maildir`` platform passes the plugin contract kit."""

from __future__ import annotations

import itertools
import os
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

import plugins.maildir
from agent.testing import ConnectorContract, RemoteFixture

_serial = itertools.count(1)


class MaildirRemote(RemoteFixture):
    """A real Maildir on disk, delivered to the way an MTA does (tmp/ then new/)."""

    plugin = plugins.maildir
    platform = "maildir"

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("cur", "new", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def settings(self) -> dict[str, Any]:
        return {"path": str(self.root), "page_size": 2}

    def _deliver(self, msg: EmailMessage) -> None:
        n = next(_serial)
        msg["From"] = "Maria Lopez <maria@example.com>"
        msg["To"] = "owner@example.com"
        msg["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
        msg["Message-ID"] = f"<contract-{n}-{os.getpid()}@example.com>"
        base = f"1767600000.M{n}P{os.getpid()}.contracthost"
        tmp = self.root / "tmp" / base
        tmp.write_bytes(msg.as_bytes())
        tmp.rename(self.root / "new" / base)

    def add_message(self, text: str) -> None:
        msg = EmailMessage()
        msg["Subject"] = "Progress"
        msg.set_content(text + "\n")
        self._deliver(msg)

    def add_attachment(self, filename: str, data: bytes) -> None:
        msg = EmailMessage()
        msg["Subject"] = "Files"
        msg.set_content("see attached\n")
        msg.add_attachment(data, maintype="application", subtype="octet-stream",
                           filename=filename)
        self._deliver(msg)


class TestMaildirContract(ConnectorContract):
    # A local folder has no credentials to refuse and no network to drop.
    test_auth_failure_is_auth_error = None  # type: ignore[assignment]
    test_transient_failure_is_transient_error = None  # type: ignore[assignment]

    @pytest.fixture
    def remote(self, tmp_path: Path) -> RemoteFixture:
        return MaildirRemote(tmp_path / "Maildir")
