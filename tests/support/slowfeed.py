"""``slowfeed``: the test feed (:mod:`tests.support.feed`), ``delay`` seconds per page:
time for a test to press Ctrl-C in the middle of a sync."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import tests.support.feed as feed
from agent import Page, Platform, hookimpl
from agent.models import Cursor


class SlowFeedSettings(feed.FeedSettings):
    delay: float = 0.5


class SlowFeedConnector(feed.FeedConnector):
    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        delay = getattr(self.settings, "delay", 0.5)
        for page in super().fetch(cursor):
            time.sleep(delay)
            yield page


@hookimpl
def register_platforms(register: Any) -> None:
    register(Platform("slowfeed", SlowFeedConnector, SlowFeedSettings, "a slow test feed"))
