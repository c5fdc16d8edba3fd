"""Disk full: "no space left in DATA_DIR", recorded in status, and the next sync with
room completes. ENOSPC is injected at the operating-system boundary: an audit hook makes
every open-for-writing under the data folder (lock files aside, they hold no data) fail
the way a full disk does, until the space kept in reserve is freed (as deleting a file
frees blocks)."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

import tests.support.feed as feed
from agent.config import load_config
from agent.plugins import make_plugin_host
from agent.store import Store
from agent.sync import SyncEngine
from tests.test_cli import run
from tests.test_sync import make_config

_FULL: dict[str, Path | None] = {"data": None}
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _hook(event: str, args: tuple[Any, ...]) -> None:
    data = _FULL["data"]
    if data is None or event != "open":
        return
    path, mode, flags = args
    writing = (mode is not None and any(c in str(mode) for c in "wax+")) or \
        (mode is None and isinstance(flags, int) and flags & _WRITE)
    if not writing or not isinstance(path, str | bytes | os.PathLike):
        return
    target = os.path.abspath(os.fsdecode(path))
    if target.endswith(".lock"):  # lock files hold no data: a full disk still opens them
        return
    if target.startswith(str(data)) and (data / "space-reserve").exists():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)


sys.addaudithook(_hook)


@pytest.fixture
def full_disk():
    def fill(data: Path) -> None:
        _FULL["data"] = data.resolve()

    yield fill
    _FULL["data"] = None


def test_disk_full_is_named_recorded_and_recovered(tmp_path, full_disk):
    config_path = make_config(tmp_path)
    host = make_plugin_host(entrypoints=False, extra=[feed])
    config = load_config(config_path, host)
    data = config.data_dir
    engine = SyncEngine(config, host, Store(data))
    engine.prepare()
    assert (data / "space-reserve").exists() is False
    engine.sync_all(["other"])  # a first sync sets the reserve aside while there is room
    assert (data / "space-reserve").stat().st_size == 1024 * 1024
    full_disk(data)
    result = engine.sync_source(config.source("feed"))
    assert not result.ok and result.error_kind == "transient"
    assert result.error.startswith(f"no space left in {data}")
    assert "bug" not in result.error
    full_disk_off()
    status = json.loads(run(config_path, "status", "--json").stdout)
    feed_row = next(r for r in status["sources"] if r["source"] == "feed")
    assert feed_row["last_error"].startswith("no space left in") and feed_row["failures"] == 1
    again = engine.sync_source(config.source("feed"))  # there is room again
    assert again.ok and again.messages_new == 7
    assert len(Store(data).messages()) == 8
    assert (data / "space-reserve").exists()  # set aside again for next time
    leftovers = [p for p in data.rglob("*") if p.name.startswith(".tmp")]
    assert not leftovers


def full_disk_off() -> None:
    _FULL["data"] = None


def test_disk_full_from_the_command_line_is_one_line(tmp_path, full_disk):
    config_path = make_config(tmp_path)
    run(config_path, "sync", "other")
    full_disk(tmp_path / "data")
    result = run(config_path, "sync", "feed", expect=1)
    assert f"retainer: error: feed: no space left in {tmp_path / 'data'}" in result.output
    assert "Traceback" not in result.output
