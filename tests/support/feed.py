"""A tiny real platform for core tests: a JSON-lines file of messages on disk.

Each line is ``{"id", "from", "name", "to", "subject", "text", "sent_at", "thread",
"attachments": [{"name", "data"}]}``. The cursor is the number of lines consumed, so
appending lines is "new mail". ``fail`` in the settings makes the connector raise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agent import Attachment, Connector, Identity, Message, Page, Platform, Settings, hookimpl
from agent.errors import AuthError, TransientError
from agent.models import Cursor


class FeedSettings(Settings):
    path: Path
    page_size: int = 3
    fail: Literal["", "auth", "transient", "crash"] = ""
    fail_after_pages: int = 0


class FeedOptions(BaseModel):
    """``[plugins.feed]``: options every feed source gets (``SourceContext.options``)."""

    model_config = ConfigDict(extra="forbid")
    label: str = ""


class FeedConnector(Connector[FeedSettings]):
    reads_mail = True

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        lines = self.settings.path.read_text().splitlines()
        offset = int(cursor.get("offset", 0))
        pages = 0
        while offset < len(lines):
            if self.settings.fail and pages >= self.settings.fail_after_pages:
                self._fail()
            chunk = lines[offset: offset + self.settings.page_size]
            offset += len(chunk)
            pages += 1
            yield Page([to_message(json.loads(line)) for line in chunk], {"offset": offset},
                       progress=(offset, len(lines)))
        if self.settings.fail and pages >= self.settings.fail_after_pages:
            self._fail()

    def _fail(self) -> None:
        if self.settings.fail == "auth":
            raise AuthError("the feed refused the token; set a new one in settings.token")
        if self.settings.fail == "transient":
            raise TransientError("the feed is down (503); will retry")
        raise RuntimeError("boom")


def to_message(item: dict[str, Any]) -> Message:
    return Message(
        remote_id=item["id"],
        sent_at=datetime.fromisoformat(item.get("sent_at", "2026-01-05T10:00:00+00:00")),
        sender=Identity("email", item["from"], name=item.get("name", "")),
        recipients=tuple(Identity("email", a) for a in item.get("to", ["owner@example.com"])),
        subject=item.get("subject", ""),
        text=item.get("text", ""),
        thread_remote_id=item.get("thread", ""),
        attachments=tuple(
            Attachment(a["name"], data=a["data"].encode(), size=len(a["data"]),
                       remote_id=str(i), inline=a.get("inline", False))
            for i, a in enumerate(item.get("attachments", []))
        ),
    )


@hookimpl
def register_platforms(register: Any) -> None:
    register(Platform("feed", FeedConnector, FeedSettings, "JSON-lines test feed",
                      options=FeedOptions))


def write_feed(path: Path, items: list[dict[str, Any]], *, append: bool = False) -> None:
    with path.open("a" if append else "w") as handle:
        for item in items:
            handle.write(json.dumps(item) + "\n")
