"""Retainer platform "jsonfeed": a contractor portal's messages from a JSON API over HTTP."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import requests
from pydantic import Field

from agent import (
    Attachment,
    AuthError,
    Connector,
    Cursor,
    Identity,
    Message,
    Page,
    Platform,
    RateLimited,
    Settings,
    SourceContext,
    SourceError,
    TransientError,
    hookimpl,
)
from agent.secrets import Secret


class JsonFeedSettings(Settings):
    """``[sources.settings]``: the API's base URL and a bearer token (a secret reference)."""

    url: str
    token: Secret
    page_size: int = Field(default=50, ge=1, le=500)
    timeout: float = 30.0


class JsonFeedConnector(Connector[JsonFeedSettings]):
    """Pages through ``/messages?after=ID``; the cursor is the last message id stored."""

    def __init__(self, settings: JsonFeedSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        after = int(cursor.get("after", 0))
        while True:
            doc = self.get(after)
            items = doc.get("messages", [])
            if not items:
                return
            after = int(items[-1]["id"])
            yield Page([self.message(item) for item in items], {"after": after})
            if not doc.get("more") or self.context.should_stop():
                return

    def get(self, after: int) -> dict[str, Any]:
        url = self.settings.url.rstrip("/") + "/messages"
        try:
            response = self.session.get(url, params={"after": after, "limit": self.settings.page_size},
                                        timeout=self.settings.timeout)
        except requests.RequestException as exc:
            raise TransientError(f"{url} did not answer ({type(exc).__name__}); will retry") from None
        if response.status_code in (401, 403):
            raise AuthError(f"{url} refused the token (HTTP {response.status_code}); "
                            "check sources.settings.token")
        if response.status_code == 429:
            raise RateLimited(f"{url} asks us to slow down",
                              float(response.headers.get("Retry-After", 60)))
        if response.status_code >= 500:
            raise TransientError(f"{url} failed with HTTP {response.status_code}; will retry")
        if response.status_code != 200:
            raise SourceError(f"{url} answered HTTP {response.status_code}; check sources.settings.url")
        result: dict[str, Any] = response.json()
        return result

    def message(self, item: dict[str, Any]) -> Message:
        files = tuple(Attachment(f["name"], data=base64.b64decode(f["data"]))
                      for f in item.get("files", ()))
        return Message(
            remote_id=str(item["id"]),
            sent_at=datetime.fromisoformat(item["sent_at"]),
            sender=Identity("email", item["from"], item.get("name", "")),
            text=item.get("text", ""),
            attachments=files,
        )

    def close(self) -> None:
        self.session.close()


@hookimpl
def register_platforms(register: Callable[[Platform], None]) -> None:
    register(Platform("jsonfeed", JsonFeedConnector, JsonFeedSettings,
                      "messages from a JSON feed over HTTP"))
