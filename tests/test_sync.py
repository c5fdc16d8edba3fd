from __future__ import annotations

from pathlib import Path

import pytest

import tests.support.feed as feed
from agent.config import load_config
from agent.plugins import hookimpl, make_plugin_host
from agent.store import Store
from agent.sync import SyncEngine

ITEMS = [
    {"id": f"<{i}@x>", "from": "maria@example.com", "name": "Maria", "subject": f"logo v{i}",
     "text": "here you go", "thread": "<t@x>",
     "attachments": [{"name": f"logo-{i}.png", "data": f"png-{i}"}]}
    for i in range(7)
]


def make_config(tmp_path: Path, **settings) -> Path:
    extra = "".join(f"{k} = {v!r}\n" for k, v in settings.items()).replace("'", '"')
    path = tmp_path / "config.toml"
    path.write_text(f"""
[agent]
data_dir = "{tmp_path}/data"
owner_emails = ["owner@example.com"]
review_since = false  # the feed's work is dated before today: all of it is queued
[[contractors]]
name = "Maria Lopez"
emails = ["maria@example.com"]
[[sources]]
name = "feed"
platform = "feed"
[sources.settings]
path = "{tmp_path}/feed.jsonl"
{extra}
[[sources]]
name = "other"
platform = "feed"
[sources.settings]
path = "{tmp_path}/other.jsonl"
""")
    feed.write_feed(tmp_path / "feed.jsonl", ITEMS)
    feed.write_feed(tmp_path / "other.jsonl", [
        {"id": "<o@x>", "from": "news@shop.example", "subject": "Sale!"}])
    return path


class Recorder:
    def __init__(self) -> None:
        self.batches: list = []
        self.results: list = []

    @hookimpl
    def records_stored(self, batch):
        self.batches.append(batch)

    @hookimpl
    def source_synced(self, result):
        self.results.append(result)


def engine_for(tmp_path, *plugins, **settings):
    host = make_plugin_host(entrypoints=False, extra=[feed, *plugins])
    config = load_config(make_config(tmp_path, **settings), host)
    return SyncEngine(config, host, Store(config.data_dir))


def test_first_noop_and_incremental_sync(tmp_path):
    engine = engine_for(tmp_path)
    first = engine.sync_all()
    assert [r.ok for r in first] == [True, True]
    assert first[0].messages_new == 7 and first[0].pages == 3 and first[0].deliverables_new == 7
    noop = engine.sync_all(["feed"])[0]
    assert noop.messages_new == 0 and noop.pages == 0
    feed.write_feed(tmp_path / "feed.jsonl", [dict(ITEMS[0], id="<new@x>")], append=True)
    incr = engine.sync_all(["feed"])[0]
    assert incr.messages_new == 1
    assert len(engine.store.messages(source="feed")) == 8
    assert engine.store.source_state("feed")["cursor"] == {"offset": 8}


def test_hook_records_stored_and_source_synced(tmp_path):
    recorder = Recorder()
    engine = engine_for(tmp_path, recorder)
    engine.sync_all(["feed"])
    assert sum(len(b.messages) for b in recorder.batches) == 7
    assert sum(len(b.deliverables) for b in recorder.batches) == 7
    assert [r.source for r in recorder.results] == ["feed"]
    engine.sync_all(["feed"])
    assert sum(len(b.messages) for b in recorder.batches) == 7  # nothing new, no event


def test_failing_event_plugin_does_not_fail_sync(tmp_path):
    class Broken:
        @hookimpl
        def records_stored(self, batch):
            raise RuntimeError("notifier down")

    engine = engine_for(tmp_path, Broken())
    assert engine.sync_all(["feed"])[0].ok


@pytest.mark.parametrize(("kind", "expected"), [("auth", "auth"), ("transient", "transient"),
                                                ("crash", "error")])
def test_failure_keeps_committed_pages_and_other_sources(tmp_path, kind, expected):
    engine = engine_for(tmp_path, fail=kind, fail_after_pages=1)
    results = {r.source: r for r in engine.sync_all()}
    assert not results["feed"].ok and results["feed"].error_kind == expected
    assert results["other"].ok
    assert len(engine.store.messages(source="feed")) == 3  # the committed first page stays
    state = engine.store.source_state("feed")
    assert state["cursor"] == {"offset": 3} and state["failures"] == 1 and state["last_error"]


def test_stop_request_finishes_page_and_resumes(tmp_path):
    engine = engine_for(tmp_path)
    engine.should_stop = lambda: True
    result = engine.sync_source(engine.config.source("feed"))
    assert result.stopped and result.messages_new == 3
    engine.should_stop = lambda: False
    assert engine.sync_all(["feed"])[0].messages_new == 4
    ids = [m["remote_id"] for m in engine.store.messages(source="feed")]
    assert len(ids) == len(set(ids)) == 7


def test_refetch_from_scratch_is_idempotent(tmp_path):
    engine = engine_for(tmp_path)
    engine.sync_all(["feed"])
    with engine.store.writing():
        engine.store.update_source_state("feed", cursor={})
    again = engine.sync_all(["feed"])[0]
    assert again.messages_new == 0 and again.deliverables_new == 0
    assert len(engine.store.deliverables()) == 7


def test_secret_values_are_redacted_from_errors():
    from agent.sync import redact

    assert redact("login failed for CANARY-PW", ["CANARY-PW"]) == "login failed for ***"
