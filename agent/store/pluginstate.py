"""Per-item plugin state, committed page by page with the cursor (``Page.state``).

One append-only file per source, ``sources/<source>/retainer-state.jsonl``: each committed page
appends one line with the entries it set (a value) or removed (``null``), and fsyncs.
Reading replays the lines; a torn last line (a kill mid-append) is ignored, which only
loses the page whose cursor was not committed either. When the file holds many more
lines than live entries it is rewritten atomically as one line. So a first sync of
10,000 items costs one small append per page, not a rewrite of the whole index.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.errors import StoreError
from agent.files import write_private

log = logging.getLogger("retainer.store")

FILENAME = "retainer-state.jsonl"
COMPACT_AT = 64  # lines; below this the file is never rewritten
COMPACT_FACTOR = 4  # rewrite once lines > 4 x live entries


class PluginState:
    """The committed state of one source: the live mapping plus its log file."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / FILENAME
        self.state: dict[str, Any] = {}
        self.lines = 0
        self._load()

    def _load(self) -> None:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return
        for number, line in enumerate(lines, 1):
            try:
                changes = json.loads(line)
            except ValueError:
                if number == len(lines):
                    log.warning("%s: ignored a torn last line (an interrupted sync)", self.path)
                    continue
                raise StoreError(
                    f"{self.path} line {number} is damaged; delete the file to let the plugin "
                    "rebuild its state (the next sync may fetch more)") from None
            _apply(self.state, changes)
        self.lines = len(lines)

    def commit(self, changes: Mapping[str, Any]) -> None:
        """Append one page's ``changes`` durably and apply them to :attr:`state`."""
        if not changes:
            return
        try:
            line = json.dumps(dict(changes), ensure_ascii=False, allow_nan=False,
                              separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"Page.state is not JSON-serializable: {exc}") from None
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode("utf-8") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        _apply(self.state, changes)
        self.lines += 1
        if self.lines > COMPACT_AT and self.lines > COMPACT_FACTOR * max(len(self.state), 1):
            whole = json.dumps(self.state, ensure_ascii=False, separators=(",", ":"))
            write_private(self.path, whole.encode("utf-8") + b"\n")
            self.lines = 1


def _apply(state: dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
