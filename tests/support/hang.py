"""A platform whose sync never ends, for the daemon's deadline tests.

``hang`` ignores the stop flag and blocks (as a connector stuck in a read would); its
declared deadline is short so the daemon has to end it. ``mode = "sleep"`` blocks in
``time.sleep``; ``mode = "spin"`` keeps yielding empty pages without ever finishing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from agent import Connector, Page, Platform, Settings, hookimpl
from agent.models import Cursor


class HangSettings(Settings):
    mode: Literal["sleep", "spin"] = "sleep"


class HangConnector(Connector[HangSettings]):
    deadline: ClassVar[float] = 1.5

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        if self.settings.mode == "sleep":
            time.sleep(3600)  # a signal handler runs, then the sleep goes on (PEP 475)
        while True:
            time.sleep(0.05)
            yield Page([], None)


@hookimpl
def register_platforms(register: Any) -> None:
    register(Platform("hang", HangConnector, HangSettings, "a source that never finishes"))
