"""agent.store.pluginstate: an append-only, fsynced log of plugin state, compacted atomically."""

from __future__ import annotations

import logging
import math
import os
import stat

import pytest

from agent.errors import StoreError
from agent.store.pluginstate import COMPACT_AT, COMPACT_FACTOR, PluginState
from tests.support import fsspy


def test_each_commit_appends_one_compact_line_durably(tmp_path, monkeypatch):
    spy = fsspy.install(monkeypatch)
    state = PluginState(tmp_path)
    state.commit({})  # nothing to say: no file
    assert not state.path.exists() and spy.calls == []
    state.commit({"maria/0001": {"files": ["é.txt"]}, "n": 1})
    state.commit({"n": None, "x": True})
    assert state.path.read_bytes() == (
        '{"maria/0001":{"files":["é.txt"]},"n":1}\n{"n":null,"x":true}\n'.encode())
    assert [c.path for c in spy.calls] == [os.path.realpath(state.path)] * 2
    assert [c.kind for c in spy.calls] == ["fsync_file"] * 2
    assert spy.calls[0].content == '{"maria/0001":{"files":["é.txt"]},"n":1}\n'.encode()
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o600
    assert state.state == {"maria/0001": {"files": ["é.txt"]}, "x": True} and state.lines == 2
    again = PluginState(tmp_path)
    assert again.state == state.state and again.lines == 2


@pytest.mark.parametrize("bad", [{"k": {1, 2}}, {"k": math.nan}, {"k": object()}])
def test_state_that_is_not_json_is_refused(tmp_path, bad):
    state = PluginState(tmp_path)
    with pytest.raises(StoreError, match=r"^Page\.state is not JSON-serializable: ") as err:
        state.commit(bad)
    assert err.value.__cause__ is None and not state.path.exists() and state.state == {}


def test_log_is_compacted_when_mostly_dead(tmp_path):
    state = PluginState(tmp_path)
    state.commit({"a": "é", "gone": 1})
    for n in range(COMPACT_AT - 1):
        state.commit({"k": n, "gone": None, "never": None})
    assert state.lines == COMPACT_AT  # never rewritten below COMPACT_AT lines
    assert len(state.path.read_bytes().splitlines()) == COMPACT_AT
    state.commit({"k": "last"})
    assert state.lines == 1
    assert state.path.read_bytes() == '{"a":"é","k":"last"}\n'.encode()
    assert PluginState(tmp_path).state == {"a": "é", "k": "last"}


def test_log_with_many_live_entries_is_not_compacted(tmp_path):
    state = PluginState(tmp_path)
    live = (COMPACT_AT + 1) // COMPACT_FACTOR + 1  # lines will not exceed 4 x live entries
    for n in range(live):
        state.commit({f"k{n}": n})
    for n in range(COMPACT_FACTOR * live - live):
        state.commit({"k0": n})
    # exactly 4 x live entries, over COMPACT_AT: still not "many more lines than entries"
    assert state.lines == COMPACT_FACTOR * live > COMPACT_AT and len(state.state) == live
    assert len(state.path.read_bytes().splitlines()) == COMPACT_FACTOR * live


def test_log_of_removed_entries_only_is_compacted(tmp_path):
    state = PluginState(tmp_path)
    for n in range(COMPACT_AT + 1):
        state.commit({"k": n} if n % 2 == 0 else {"k": None})
    assert state.state == {"k": COMPACT_AT} and state.lines == 1


def test_damaged_middle_line_is_an_error_that_says_what_to_do(tmp_path):
    path = tmp_path / "retainer-state.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":\n{"c":3}\n')
    with pytest.raises(StoreError) as err:
        PluginState(tmp_path)
    assert str(err.value) == (f"{path} line 2 is damaged; delete the file to let the plugin "
                              "rebuild its state (the next sync may fetch more)")
    assert err.value.__cause__ is None


def test_torn_last_line_is_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "retainer-state.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    with caplog.at_level(logging.WARNING, logger="retainer.store"):
        state = PluginState(tmp_path)
    assert state.state == {"a": 1, "b": 2} and state.lines == 3
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: ignored a torn last line (an interrupted sync)"]
