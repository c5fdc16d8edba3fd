"""The example third-party plugin passes Retainer's contract kit against a local HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import retainer_jsonfeed
from jsonfeed_server import FeedServer

from agent.testing import ConnectorContract, RemoteFixture

TOKEN = "jsonfeed-test-token"


class FeedRemote(RemoteFixture):
    plugin = retainer_jsonfeed
    platform = "jsonfeed"

    def __init__(self, server: FeedServer) -> None:
        self.server = server

    def settings(self) -> dict[str, Any]:
        return {"url": self.server.url, "token": {"env": "JSONFEED_TOKEN"}, "page_size": 2}

    def add_message(self, text: str) -> None:
        self.server.add(text)

    def add_attachment(self, filename: str, data: bytes) -> None:
        self.server.add("files attached", files={filename: data})

    def break_auth(self) -> None:
        self.server.mode = "auth"

    def break_transiently(self) -> None:
        self.server.mode = "down"


class TestJsonFeedContract(ConnectorContract):
    @pytest.fixture
    def remote(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[RemoteFixture]:
        monkeypatch.setenv("JSONFEED_TOKEN", TOKEN)
        server = FeedServer(TOKEN).start()
        try:
            yield FeedRemote(server)
        finally:
            server.stop()
