"""A platform whose sync never ends, for the daemon's deadline tests.

``hang`` ignores the stop flag and blocks (as a connector stuck in a read would); its
declared deadline is short so the daemon has to end it. ``mode = "sleep"`` blocks in
``time.sleep``; ``mode = "spin"`` keeps yielding empty pages without ever finishing;
``mode = "hold"`` writes a download in progress into its scratch folder, sets
:data:`HOLDING` and waits for :data:`RELEASE` (in-process tests), then checks the file
is still there and finishes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from agent import Connector, Page, Platform, Settings, hookimpl
from agent.errors import SourceError
from agent.models import Cursor

HOLDING = threading.Event()
RELEASE = threading.Event()


class HangSettings(Settings):
    mode: Literal["sleep", "spin", "hold"] = "sleep"


class HangConnector(Connector[HangSettings]):
    deadline: ClassVar[float] = 1.5

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        if self.settings.mode == "hold":
            partial = self.context.scratch_dir / "download.part"
            partial.write_bytes(b"half a file")
            HOLDING.set()
            RELEASE.wait(30)
            if not partial.exists():
                raise SourceError("the download in progress was deleted under the sync")
            yield Page([], {"done": True})
            return
        if self.settings.mode == "sleep":
            time.sleep(3600)  # a signal handler runs, then the sleep goes on (PEP 475)
        while True:
            time.sleep(0.05)
            yield Page([], None)


@hookimpl
def register_platforms(register: Any) -> None:
    register(Platform("hang", HangConnector, HangSettings, "a source that never finishes"))
