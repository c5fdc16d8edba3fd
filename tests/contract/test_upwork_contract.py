"""The builtin ``upwork`` platform passes the plugin contract kit against its sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import plugins.upwork
from agent.testing import ConnectorContract, RemoteFixture
from plugins.upwork.sandbox import Sandbox

SECRET_ENV = "RETAINER_CONTRACT_UPWORK_SECRET"


class UpworkRemote(RemoteFixture):
    """An empty sandbox with one contractor's room; the source is signed in beforehand."""

    plugin = plugins.upwork
    platform = "upwork"

    def __init__(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sandbox = sandbox
        monkeypatch.setenv(SECRET_ENV, sandbox.client_secret)
        self.room = sandbox.add_room(messages=0)
        maria = next(u for u in self.room.user_ids if u != sandbox.owner.id)
        self.contractor = {"name": "Maria Lopez", "identities": {"upwork": maria}}

    def prepare(self, state_dir: Path) -> None:
        self.sandbox.authorize_source(state_dir)

    def settings(self) -> dict[str, Any]:
        return self.sandbox.settings(client_secret={"env": SECRET_ENV}, page_size=2,
                                     rate_per_second=9.5, timeout=5, max_retries=0)

    def add_message(self, text: str) -> None:
        self.sandbox.add_story(self.room.id, text)

    def add_attachment(self, filename: str, data: bytes) -> bytes:
        story = self.sandbox.add_story(self.room.id, "files attached",
                                       attachments=[(filename, len(data))])
        return b"".join(story.attachments[0].content())  # the sandbox makes up the bytes

    def break_auth(self) -> None:
        self.sandbox.revoke_all()

    def break_transiently(self) -> None:
        self.sandbox.inject("status", status=503, times=None)


class TestUpworkContract(ConnectorContract):
    @pytest.fixture
    def remote(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[RemoteFixture]:
        sandbox = Sandbox(seed=5, threads=0, messages_per_thread=0).start()
        try:
            yield UpworkRemote(sandbox, monkeypatch)
        finally:
            sandbox.stop()
