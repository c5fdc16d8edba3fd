"""The builtin ``maildir`` platform passes the plugin contract kit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import plugins.maildir
from agent.testing import ConnectorContract, RemoteFixture
from tests.contract.mail_remote import MailRemote


class MaildirRemote(MailRemote):
    """A real Maildir on disk, delivered to the way an MTA does (tmp/ then new/)."""

    plugin = plugins.maildir
    platform = "maildir"

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("cur", "new", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def settings(self) -> dict[str, Any]:
        return {"path": str(self.root), "page_size": 2}

    def deliver(self, raw: bytes, serial: int) -> None:
        base = f"1767600000.M{serial}P{os.getpid()}.contracthost"
        tmp = self.root / "tmp" / base
        tmp.write_bytes(raw)
        tmp.rename(self.root / "new" / base)


class TestMaildirContract(ConnectorContract):
    # A local folder has no credentials to refuse and no network to drop.
    test_auth_failure_is_auth_error = None  # type: ignore[assignment]
    test_transient_failure_is_transient_error = None  # type: ignore[assignment]

    @pytest.fixture
    def remote(self, tmp_path: Path) -> RemoteFixture:
        return MaildirRemote(tmp_path / "Maildir")
