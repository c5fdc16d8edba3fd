"""The builtin ``freelancer`` platform passes the plugin contract kit against its sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import plugins.freelancer
from agent.testing import ConnectorContract, RemoteFixture
from plugins.freelancer.sandbox import Fault, Sandbox

TOKEN_ENV = "RETAINER_CONTRACT_FREELANCER_TOKEN"


class FreelancerRemote(RemoteFixture):
    """An empty sandbox with one freelancer, writing in one thread with the owner."""

    plugin = plugins.freelancer
    platform = "freelancer"
    contractor: ClassVar[dict[str, Any]] = {"name": "Maria Lopez", "identities": {}}

    def __init__(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sandbox = sandbox
        monkeypatch.setenv(TOKEN_ENV, sandbox.token)
        self.freelancer = sandbox.add_freelancer("Maria Lopez", "marialopez")
        self.thread = sandbox.add_thread([sandbox.owner_id, self.freelancer])
        self.contractor = {"name": "Maria Lopez",
                           "identities": {"freelancer": str(self.freelancer)}}

    def settings(self) -> dict[str, Any]:
        return {"token": {"env": TOKEN_ENV}, "base_url": self.sandbox.base_url, "page_size": 2,
                "rate_per_second": 100.0, "timeout": 5.0, "max_retries": 0, "prefetch_pages": 0}

    def add_message(self, text: str) -> None:
        self.sandbox.add_message(self.thread, self.freelancer, text)

    def add_attachment(self, filename: str, data: bytes) -> None:
        self.sandbox.add_message(self.thread, self.freelancer, "files attached",
                                 files=[(filename, data, "application/octet-stream")])

    def break_auth(self) -> None:
        self.sandbox.revoke_token()

    def break_transiently(self) -> None:
        self.sandbox.inject(Fault("503", times=-1))


class TestFreelancerContract(ConnectorContract):
    @pytest.fixture
    def remote(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[RemoteFixture]:
        sandbox = Sandbox(seed=3, threads=0, messages_per_thread=0).start()
        try:
            yield FreelancerRemote(sandbox, monkeypatch)
        finally:
            sandbox.stop()
