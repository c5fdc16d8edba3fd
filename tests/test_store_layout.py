"""The store's layout: bounded shards, their summaries, and the upgrade from month shards."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import pytest

from agent.files import seal
from agent.models import Attachment, Identity, Message
from agent.store import Store, layout
from agent.store import workflow as wf

OWNER = frozenset({"email:owner@example.com"})
MARCH = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
PEOPLE = ("maria@example.com", "sam@example.com", "news@shop.example")


def msg(n: int, when: datetime, sender: str = "maria@example.com", *, file: bool = False,
        text: str = "hello") -> Message:
    atts = (Attachment(f"logo-{n}.pdf", "application/pdf", data=b"%%PDF %d" % n),) if file else ()
    return Message(f"<{n}@x>", when, Identity("email", sender, name=sender.split("@")[0]),
                   recipients=(Identity("email", "owner@example.com"),), subject=f"s{n}",
                   text=text, thread_remote_id=f"<thread-{n % 7}@x>", attachments=atts)


def new_store(path: Path) -> Store:
    store = Store(path)
    with store.writing():
        store.add_contractor("Maria Lopez", [Identity("email", "maria@example.com")])
        store.add_contractor("Sam Chen", [Identity("email", "sam@example.com")])
    return store


def commit(store: Store, records: list[Message], source: str = "inbox") -> Any:
    with store.writing():
        return store.commit_page(source, "imap", records, owner_keys=OWNER)


def shard_files(store: Store, folder: str = "messages") -> list[Path]:
    return sorted((store.root / folder).glob("s*.json"))


def stored_count(path: Path, table: str = "messages") -> int:
    return len(json.loads(path.read_bytes()).get(table, {}))


@pytest.fixture
def small_shards(monkeypatch):
    monkeypatch.setattr(layout, "SHARD_DOCS", 50)


def test_one_busy_month_rolls_into_bounded_shards(tmp_path, small_shards):
    store = new_store(tmp_path / "d")
    records = [msg(n, MARCH + timedelta(minutes=n), PEOPLE[n % 3]) for n in range(230)]
    for first in range(0, 230, 40):
        commit(store, records[first:first + 40])
    files = shard_files(store)
    assert [stored_count(p) for p in files] == [50, 50, 50, 50, 30]
    assert len(store.messages()) == 230
    assert Store(tmp_path / "d").stored_counts() == {"messages": 230, "deliverables": 0}
    stamps = {p: os.stat(p).st_mtime_ns for p in files}
    commit(store, [msg(1000, MARCH, "sam@example.com")])  # one more page
    assert [p for p in files if os.stat(p).st_mtime_ns != stamps[p]] == [files[-1]]


def test_shards_roll_by_bytes_too(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "SHARD_BYTES", 20_000)
    store = new_store(tmp_path / "d")
    commit(store, [msg(n, MARCH, text="x" * 3000) for n in range(20)])
    sizes = [p.stat().st_size for p in shard_files(store)]
    assert len(sizes) >= 3 and max(sizes) < 20_000 + 4_000


def test_refetched_message_is_updated_where_it_lives(tmp_path, small_shards):
    store = new_store(tmp_path / "d")
    commit(store, [msg(n, MARCH + timedelta(hours=n)) for n in range(120)])
    again = commit(store, [msg(3, MARCH + timedelta(hours=3), text="edited")])
    assert (again.messages_new, again.messages_updated) == (0, 1)
    assert sum(stored_count(p) for p in shard_files(store)) == 120
    assert wf.message(store, store.messages()[-4]["id"])["text"] == "edited"


def test_newest_first_across_overlapping_shards(tmp_path, small_shards):
    store = new_store(tmp_path / "d")
    rng = random.Random(7)
    whens = [MARCH - timedelta(days=rng.randrange(0, 900), minutes=n) for n in range(300)]
    records = [msg(n, whens[n], PEOPLE[n % 3]) for n in range(300)]
    for first in range(0, 300, 60):  # dates in random order: shard ranges overlap
        commit(store, records[first:first + 60])
    listed = [d["sent_at"] for d in store.messages()]
    assert listed == sorted(listed, reverse=True) and len(listed) == 300
    sam = store.find_contractor("Sam Chen")["id"]
    top = list(islice(store.iter_messages_newest_first(contractor="Sam Chen"), 10))
    expected = sorted((d for d in store.messages() if d["contractor_id"] == sam),
                      key=lambda d: d["sent_at"], reverse=True)[:10]
    assert [d["id"] for d in top] == [d["id"] for d in expected]
    commit(store, [msg(5000, MARCH, source_flag := "maria@example.com")], source="other")
    assert [d["sender"]["address"] for d in store.messages(source="other")] == [source_flag]


def test_review_queue_and_lookups_use_the_summaries(tmp_path, small_shards):
    store = new_store(tmp_path / "d")
    commit(store, [msg(n, MARCH + timedelta(hours=n), PEOPLE[n % 2], file=n % 5 == 0)
                   for n in range(200)])
    queue = store.deliverables(unreviewed=True)
    assert len(queue) == 40
    with store.writing():
        wf.record_review(store, queue[0]["id"], "approved", rating=5)
    other = Store(tmp_path / "d")  # another process: sees the review through the summaries
    assert len(other.deliverables(unreviewed=True)) == 39
    assert other.deliverable(queue[0]["id"][:8])["review_status"] == "approved"
    assert len(other.deliverables(contractor="Sam Chen")) == 20
    tid = store.messages()[0]["thread_id"]
    assert {m["thread_id"] for m in wf.thread_messages(store, tid)} == {tid}
    assert len(wf.thread_messages(store, tid)) == len([m for m in store.messages()
                                                      if m["thread_id"] == tid])


def test_stale_or_lost_summaries_are_rebuilt_from_the_shards(tmp_path, small_shards):
    store = new_store(tmp_path / "d")
    commit(store, [msg(n, MARCH + timedelta(hours=n)) for n in range(80)])
    index = store.root / "index" / "messages"
    before = {p.name: p.read_bytes() for p in index.iterdir()}
    commit(store, [msg(n, MARCH + timedelta(hours=n)) for n in range(80, 90)])
    for name, blob in before.items():  # as if killed after the shard write, before its summary
        (index / name).write_bytes(blob)
    (index / "s000001.json").write_bytes(b"{not json")
    fresh = Store(tmp_path / "d")
    assert len(fresh.messages()) == 90
    again = commit(fresh, [msg(n, MARCH + timedelta(hours=n)) for n in range(90)])
    assert again.messages_new == 0
    assert sum(stored_count(p) for p in shard_files(fresh)) == 90


# -- the upgrade from one shard per month (schema 1) -----------------------------------------


def write_v1(store: Store) -> None:
    """Rewrite a store as Retainer with schema 1 kept it: one file per month."""
    months: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for path in shard_files(store):
        for doc in json.loads(path.read_bytes())["messages"].values():
            month = months.setdefault(doc["sent_at"][:7], {"messages": {}, "threads": {}})
            month["messages"][str(len(month["messages"]) + 1)] = doc
            threads = month["threads"]
            entry = next((t for t in threads.values() if t["id"] == doc["thread_id"]), None)
            if entry is None:
                threads[str(len(threads) + 1)] = {
                    "id": doc["thread_id"], "source": doc["source"], "platform": doc["platform"],
                    "remote_id": doc["thread_remote_id"], "subject": doc["subject"],
                    "identity": doc["identity"], "first_at": doc["sent_at"],
                    "last_at": doc["sent_at"]}
            else:
                entry["first_at"] = min(entry["first_at"], doc["sent_at"])
                entry["last_at"] = max(entry["last_at"], doc["sent_at"])
        path.unlink()
    dmonths: dict[str, dict[str, dict[str, Any]]] = {}
    for path in shard_files(store, "deliverables"):
        for doc in json.loads(path.read_bytes())["deliverables"].values():
            table = dmonths.setdefault(doc["received_at"][:7], {})
            table[str(len(table) + 1)] = doc
        path.unlink()
    for month, tables in months.items():
        (store.root / "messages" / f"{month}.json").write_bytes(json.dumps(tables).encode())
    for month, table in dmonths.items():
        (store.root / "deliverables" / f"{month}.json").write_bytes(
            json.dumps({"deliverables": table}).encode())
    for path in (store.root / "index").rglob("*.json"):
        path.unlink()
    meta = json.loads((store.root / "meta.json").read_bytes())
    for doc in meta["meta"].values():
        doc["version"] = 1
    (store.root / "meta.json").write_bytes(json.dumps(meta).encode())


def v1_store(path: Path) -> dict[str, Any]:
    """A schema-1 store across 14 months, with reviews and a cursor; what it must hold."""
    store = new_store(path)
    records = [msg(n, MARCH - timedelta(days=n * 3), PEOPLE[n % 3], file=n % 9 == 1)
               for n in range(140)]
    for first in range(0, 140, 35):
        commit(store, records[first:first + 35])
    with store.writing():
        queue = store.deliverables(unreviewed=True)
        wf.record_review(store, queue[0]["id"], "approved", rating=4, feedback="great")
        wf.record_review(store, queue[1]["id"], "changes_requested", feedback="smaller")
        store.update_source_state("inbox", cursor="uid:140")
    expected = snapshot(store)
    write_v1(store)
    return expected


def snapshot(store: Store) -> dict[str, Any]:
    return {
        "messages": sorted(json.dumps(m, sort_keys=True) for m in store.messages()),
        "deliverables": sorted(json.dumps(d, sort_keys=True) for d in store.deliverables()),
        "threads": sorted((t["id"], t["last_at"]) for t in store.threads()),
        "cursor": store.source_state("inbox").get("cursor"),
        "reviews": len(wf.review_events(store)),
    }


def test_month_store_is_upgraded_on_open_with_reviews_and_cursors(tmp_path):
    expected = v1_store(tmp_path / "d")
    months = sorted(p.stem for p in (tmp_path / "d/store/messages").iterdir())
    assert months[0] == "2025-01" and len(months) == 15
    store = Store(tmp_path / "d")
    assert snapshot(store) == expected
    assert not [p for p in (store.root / "messages").iterdir() if layout.MONTH_RE.match(p.stem)]
    assert schema(store.root) == layout.SCHEMA_VERSION  # 3: months, then the records step
    assert commit(store, [msg(3, MARCH - timedelta(days=9), PEOPLE[0])]).messages_new == 0


CHILD = """
import os, signal, sys
from pathlib import Path
import agent.store.storage as storage
import agent.store.migrate as migrate
import agent.store.layout as layout
layout.SHARD_DOCS = 70
layout.DELIVERABLE_SHARD_DOCS = 8
limit = int(sys.argv[2])
calls = 0
def counted(real):
    def wrapper(*args, **kwargs):
        global calls
        calls += 1
        if calls == limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapper
storage.write_private = counted(storage.write_private)
layout.write_derived = counted(layout.write_derived)
migrate.fsync_dir = counted(migrate.fsync_dir)
from agent.store import Store
Store(Path(sys.argv[1]))
print("finished", calls)
"""


def layout_state(root: Path, old: dict[str, bytes]) -> str:
    version = schema(root)
    if version == 1:  # the old layout, untouched
        now = {str(p.relative_to(root)): p.read_bytes()
               for folder in ("messages", "deliverables") for p in (root / folder).iterdir()
               if layout.MONTH_RE.match(p.stem)}
        assert now == old
        return "old"
    assert version in (2, 3)  # 3 once the records step ran after the months' commit
    return "new"


def test_kill_9_during_the_upgrade_leaves_old_or_new_never_neither(tmp_path):
    """A real SIGKILL at every write of the upgrade (and between its steps)."""
    pristine = tmp_path / "pristine"
    expected = v1_store(pristine)
    old = {str(p.relative_to(pristine / "store")): p.read_bytes()
           for folder in ("messages", "deliverables") for p in (pristine / "store" / folder).iterdir()}
    seen = set()
    limit = 1
    while True:
        data = tmp_path / f"run{limit}"
        subprocess.run(["cp", "-a", str(pristine), str(data)], check=True)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(data), str(limit)],
                              capture_output=True, text=True, timeout=60)
        finished = proc.returncode == 0
        assert finished or proc.returncode == -signal.SIGKILL, proc.stderr
        seen.add(layout_state(data / "store", old))
        assert snapshot(Store(data)) == expected  # the next open finishes or starts again
        assert layout_state(data / "store", old) == "new"
        if finished:
            break
        limit += 1
    assert seen == {"old", "new"} and limit > 5


def test_versions_chain_across_shards_and_processes(tmp_path, monkeypatch):
    """The latest version of a piece of work is found through the shard summaries."""
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 2)
    store = new_store(tmp_path / "d")

    def version(n: int, filename: str) -> Message:
        return Message(f"<v{n}@x>", MARCH + timedelta(days=n),
                       Identity("email", "maria@example.com", name="Maria"),
                       recipients=(Identity("email", "owner@example.com"),), subject="logo",
                       thread_remote_id="<logo@x>",
                       attachments=(Attachment(filename, "image/png", data=b"png %d" % n),))

    for n, name in enumerate(["logo.png", "logo-v2.png", "other.png", "logo final.png"]):
        commit(store, [version(n, name)])
    commit(Store(tmp_path / "d"), [version(9, "logo_v5.png")])  # another process
    found = {d["filename"]: d for d in Store(tmp_path / "d").deliverables()}
    assert len(list((store.root / "deliverables").glob("s*.json"))) == 3
    assert [found[f]["version"] for f in ("logo.png", "logo-v2.png", "logo final.png",
                                          "logo_v5.png")] == [1, 2, 3, 4]
    assert found["other.png"]["version"] == 1
    assert found["logo_v5.png"]["replaces"] == found["logo final.png"]["id"]
    assert found["logo_v5.png"]["version_of"] == found["logo.png"]["id"]
    assert not (store.root / "versions.json").exists()


def test_a_long_running_process_sees_shards_another_one_wrote(tmp_path, small_shards):
    daemon, cli = new_store(tmp_path / "d"), Store(tmp_path / "d")
    commit(daemon, [msg(n, MARCH + timedelta(hours=n)) for n in range(60)])
    assert len(daemon.messages()) == 60  # the daemon's catalog is loaded
    commit(cli, [msg(n, MARCH + timedelta(hours=n)) for n in range(40, 130)])
    assert len(daemon.messages()) == 130
    again = commit(daemon, [msg(n, MARCH + timedelta(hours=n)) for n in range(100, 140)])
    assert (again.messages_new, again.messages_updated) == (10, 0)
    assert sum(stored_count(p) for p in shard_files(daemon)) == 140
    (daemon.root / "index" / "messages.generation").write_bytes(seal(b'"dirty:killed"'))
    assert len(Store(tmp_path / "d").messages()) == 140  # a killed writer: every shard looked at


# -- schema 3: reviews, outbox and reminders in bounded shards -------------------------------

RECORD_FILES = {"workflow.json": {"reviews": "reviews", "outbox": "outbox"},
                "notify.json": {"events": "notified"},
                "instructions.json": {"sent": "instructions"}}


def reviewed_store(path: Path, reviews: int = 0) -> Store:
    """A store with deliverables, every one reviewed (some twice), sent feedback and
    reminders, written by this Retainer (records in bounded shards)."""
    store = new_store(path)
    commit(store, [msg(n, MARCH - timedelta(hours=n), PEOPLE[n % 2], file=True)
                   for n in range(reviews or 30)])
    with store.writing():
        queue = store.deliverables(unreviewed=True)
        for i, doc in enumerate(queue):
            when = MARCH + timedelta(minutes=i)
            wf.record_review(store, doc["id"], "changes_requested", feedback=f"f{i}", when=when)
            if i % 3 == 0:
                wf.record_review(store, doc["id"], "approved", rating=4,
                                 when=when + timedelta(days=1))
            if i % 4 == 0:
                wf.record_sent(store, {"kind": "feedback", "to": "maria@example.com",
                                       "text": f"thanks {i}", "sent_at": f"2026-03-0{i % 9 + 1}"},
                               deliverable_id=doc["id"])
        wf.mark_notified(store, [f"reminder:{d['id']}" for d in queue[:7]], when=MARCH)
        wf.save_template(store, "logo-brief", "Make a logo for {client}", when=MARCH)
        wf.save_template(store, "logo-brief", "Make a bold logo for {client}", when=MARCH)
        for i in range(9):
            wf.record_instruction(store, {"template": "logo-brief", "version": 1 + i % 2,
                                          "contractor_id": f"c{i % 2}",
                                          "sent_at": f"2026-03-1{i}T10:00:00Z"})
    return store


def records_snapshot(store: Store) -> dict[str, Any]:
    return {"reviews": wf.review_events(store), "outbox": wf.outbox(store),
            "notified": wf.notified(store), "templates": wf.templates(store),
            "instructions": wf.sent_instructions(store),
            "deliverables": sorted(json.dumps(d, sort_keys=True) for d in store.deliverables()),
            "cursor": store.source_state("inbox").get("cursor")}


def write_v2(store: Store) -> dict[str, bytes]:
    """Rewrite a store's records as schema 2 kept them: every one in workflow.json,
    notify.json and instructions.json (TinyDB JSON, numbered documents); return those
    files' bytes."""
    written = {}
    for name, tables in RECORD_FILES.items():
        path = store.root / name
        data: dict[str, dict[str, Any]] = json.loads(path.read_bytes()) if path.exists() else {}
        for table, folder in tables.items():
            docs = [doc for path in shard_files(store, folder)
                    for doc in json.loads(path.read_bytes())[table].values()]
            if docs:
                data[table] = {str(i + 1): doc for i, doc in enumerate(docs)}
            for path in [*(store.root / folder).iterdir(),
                         *(store.root / "index" / folder).iterdir()]:
                path.unlink()
            (store.root / folder).rmdir()
            (store.root / "index" / f"{folder}.generation").unlink(missing_ok=True)
        written[name] = json.dumps(data).encode()
        (store.root / name).write_bytes(written[name])
    meta = json.loads((store.root / "meta.json").read_bytes())
    meta["meta"] = {number: dict(doc, version=2) if doc["name"] == "schema" else doc
                    for number, doc in meta["meta"].items() if doc["name"] != "records_moved"}
    (store.root / "meta.json").write_bytes(json.dumps(meta).encode())
    return written


def schema(root: Path) -> int:
    meta = json.loads((root / "meta.json").read_bytes())
    return next(d["version"] for d in meta["meta"].values() if d["name"] == "schema")


def test_reviews_roll_into_bounded_shards_and_a_review_writes_one(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 8)  # records' shards too
    store = reviewed_store(tmp_path / "d", reviews=40)
    shards = shard_files(store, "reviews")
    events = wf.review_events(store)
    assert len(events) == 40 + 14 and len(shards) == 7
    assert all(stored_count(p, "reviews") <= 8 for p in shards)
    assert not (store.root / "workflow.json").exists()
    assert not (store.root / "notify.json").exists()
    before = {p: p.stat().st_mtime_ns for p in shards}
    doc = store.deliverables()[0]
    with store.writing():
        wf.record_review(store, doc["id"], "approved", rating=5, when=MARCH + timedelta(days=9))
    after = shard_files(store, "reviews")
    changed = [p for p in after if before.get(p) != p.stat().st_mtime_ns]
    assert changed == [after[-1]]  # only the open shard (here a new one) was written
    fresh = Store(tmp_path / "d")  # another process sees every review, oldest first
    assert [e["id"] for e in wf.review_events(fresh)] == [e["id"] for e in wf.review_events(store)]
    assert len(wf.review_events(fresh)) == 55
    # the same event recorded again replaces itself where it is, in an old shard
    first = dict(wf.review_events(fresh)[0])
    with fresh.writing():
        from agent.store import records

        records.save(fresh, "reviews", [dict(first, feedback="edited")])
    assert len(wf.review_events(Store(tmp_path / "d"))) == 55
    assert stored_count(after[0], "reviews") == 8
    assert json.loads(after[0].read_bytes())["reviews"]["1"]["feedback"] == "edited"


def test_workflow_and_notify_files_are_moved_on_open(tmp_path):
    store = reviewed_store(tmp_path / "d")
    expected = records_snapshot(store)
    write_v2(store)
    assert schema(tmp_path / "d/store") == 2
    opened = Store(tmp_path / "d")
    assert records_snapshot(opened) == expected
    root = opened.root
    assert not (root / "workflow.json").exists() and not (root / "notify.json").exists()
    assert shard_files(opened, "reviews") and shard_files(opened, "notified")
    assert set(json.loads((root / "instructions.json").read_bytes())) == {"templates"}
    assert len(shard_files(opened, "instructions")) == 1
    assert schema(root) == 3
    assert oct((root / "reviews").stat().st_mode & 0o777) == "0o700"
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in shard_files(opened, "reviews"))


def test_unknown_tables_of_workflow_json_are_kept_aside(tmp_path):
    store = reviewed_store(tmp_path / "d")
    expected = records_snapshot(store)
    write_v2(store)
    path = tmp_path / "d/store/workflow.json"
    data = json.loads(path.read_bytes())
    data["later"] = {"1": {"id": "x", "note": "kept"}}
    path.write_bytes(json.dumps(data).encode())
    opened = Store(tmp_path / "d")
    assert records_snapshot(opened) == expected
    assert not path.exists()
    kept = tmp_path / "d/store/workflow.kept.json"
    assert json.loads(kept.read_bytes()) == {"later": {"1": {"id": "x", "note": "kept"}}}
    assert records_snapshot(Store(tmp_path / "d")) == expected  # not moved twice


def test_a_schema_2_retainer_refuses_to_write_once_the_move_began(tmp_path):
    store = reviewed_store(tmp_path / "d")
    write_v2(store)
    Store(tmp_path / "d")
    assert schema(tmp_path / "d/store") == layout.SCHEMA_VERSION == 3


RECORDS_CHILD = """
import os, signal, sys
from pathlib import Path
import agent.store.storage as storage
import agent.store.migrate as migrate
import agent.store.layout as layout
layout.DELIVERABLE_SHARD_DOCS = 6
limit = int(sys.argv[2])
calls = 0
def counted(real):
    def wrapper(*args, **kwargs):
        global calls
        calls += 1
        if calls == limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapper
storage.write_private = counted(storage.write_private)
storage.fsync_dir = counted(storage.fsync_dir)
layout.write_derived = counted(layout.write_derived)
migrate.write_private = counted(migrate.write_private)
migrate.fsync_dir = counted(migrate.fsync_dir)
from agent.store import Store
Store(Path(sys.argv[1]))
print("finished", calls)
"""


def records_state(root: Path, old: dict[str, bytes]) -> dict[str, str]:
    """Per old file: "old" (there, byte for byte as before) or "new" (gone; for
    instructions.json, holding the templates only)."""
    state = {}
    for name, blob in old.items():
        path = root / name
        if path.exists() and path.read_bytes() == blob:
            state[name] = "old"
        else:
            assert not path.exists() or set(json.loads(path.read_bytes())) == {"templates"}
            state[name] = "new"
    return state


def test_kill_9_during_the_records_move_leaves_old_or_new_never_neither(tmp_path):
    """A real SIGKILL at every write and folder fsync of the move from workflow.json and
    notify.json; the next open finishes it, every review, sent message and reminder kept."""
    pristine = tmp_path / "pristine"
    store = reviewed_store(pristine)
    expected = records_snapshot(store)
    old = write_v2(store)
    seen: set[tuple[str, ...]] = set()
    limit = 1
    while True:
        data = tmp_path / f"run{limit}"
        subprocess.run(["cp", "-a", str(pristine), str(data)], check=True)
        proc = subprocess.run([sys.executable, "-c", RECORDS_CHILD, str(data), str(limit)],
                              capture_output=True, text=True, timeout=60)
        finished = proc.returncode == 0
        assert finished or proc.returncode == -signal.SIGKILL, proc.stderr
        seen.add(tuple(sorted(records_state(data / "store", old).values())))
        assert records_snapshot(Store(data)) == expected  # the next open finishes the move
        assert set(records_state(data / "store", old).values()) == {"new"}
        if finished:
            break
        limit += 1
    assert {("old", "old", "old"), ("new", "old", "old"), ("new", "new", "old"),
            ("new", "new", "new")} <= seen
    assert limit > 8


def test_derived_caches_are_chunked_and_a_page_rewrites_the_last_chunk(tmp_path, monkeypatch):
    """Thread activity and counts: one file per few shards, not one growing file."""
    from agent.store import activity, counts

    monkeypatch.setattr(layout, "SHARD_DOCS", 10)
    monkeypatch.setattr(activity, "PER_CHUNK", 3)
    monkeypatch.setattr(counts, "PER_CHUNK", 4)
    store = new_store(tmp_path / "d")
    for first in range(0, 100, 20):
        commit(store, [msg(n, MARCH + timedelta(minutes=n), PEOPLE[n % 3]) for n in
                       range(first, first + 20)])
    (store.root / "cache").mkdir(exist_ok=True)
    (store.root / "cache" / "threads.json").write_bytes(b"{}")  # an earlier version's
    (store.root / ".counts.json").write_bytes(b"{}")
    def oldest_first() -> list[Any]:
        return sorted(store.messages(), key=lambda m: m["sent_at"])

    expected = activity.messages_activity(oldest_first())
    reader = Store(tmp_path / "d")
    assert reader.thread_activity() == expected
    assert sum(c["messages"] for c in reader.source_counts().values()) == 100
    chunks = sorted(p.name for p in (store.root / "cache" / "threads").iterdir())
    assert chunks == ["c00000.json", "c00001.json", "c00002.json", "c00003.json"]  # 10 shards
    assert sorted(p.name for p in (store.root / ".counts").iterdir()) == [
        "messages-00000.json", "messages-00001.json", "messages-00002.json"]
    assert not (store.root / "cache" / "threads.json").exists()
    assert not (store.root / ".counts.json").exists()
    before = {p: p.stat().st_mtime_ns for p in (store.root / "cache" / "threads").iterdir()}
    commit(store, [msg(n, MARCH + timedelta(minutes=n), PEOPLE[0]) for n in range(100, 105)])
    assert Store(tmp_path / "d").thread_activity() == activity.messages_activity(
        oldest_first())
    rewritten = sorted(p.name for p, t in before.items() if p.stat().st_mtime_ns != t)
    assert rewritten == ["c00003.json"]  # the open shard's chunk only
    (store.root / "cache" / "threads" / "c00001.json").write_bytes(b"not json")  # damaged
    assert Store(tmp_path / "d").thread_activity() == activity.messages_activity(
        oldest_first())


def test_where_many_finds_what_where_finds_with_or_without_the_map(tmp_path, small_shards,
                                                                    monkeypatch):
    store = new_store(tmp_path / "d")
    for first in range(0, 160, 40):
        commit(store, [msg(n, MARCH + timedelta(minutes=n)) for n in range(first, first + 40)])
    ids = [m["id"] for m in store.messages()]
    asked = [*ids[::7], "m_not_stored", ids[3]]
    cat = Store(tmp_path / "d").catalog("messages")
    assert len(cat.names()) == 4
    found = cat.where_many(asked)
    assert cat._where is None  # a page's worth: no map built
    expected = {i: cat.where(i) for i in asked if cat.where(i) is not None}
    assert found == expected and "m_not_stored" not in found and len(found) == 24
    monkeypatch.setattr(layout, "MAP_AFTER", 10)
    mapped = Store(tmp_path / "d").catalog("messages")
    assert mapped.where_many(asked) == expected and mapped._where is not None
    # a page re-fetching an old message and naming a new one twice: each stored once
    again = commit(store, [msg(2, MARCH + timedelta(minutes=2)), msg(900, MARCH),
                           msg(900, MARCH)])
    assert again.messages_new == 1
    assert sum(stored_count(p) for p in shard_files(store)) == 161


def test_a_long_sync_keeps_its_id_map_right_page_by_page(tmp_path, small_shards,
                                                         monkeypatch):
    """Once a sync has built the ``{id: shard}`` map, each page adds only its own ids to
    it: new messages (in the open shard and the next), an old one fetched again."""
    monkeypatch.setattr(layout, "MAP_AFTER", 10)
    store = new_store(tmp_path / "d")
    cat = store.catalog("messages")
    for first in range(0, 120, 40):
        commit(store, [msg(n, MARCH + timedelta(minutes=n)) for n in range(first, first + 40)])
    assert cat._where is not None
    again = commit(store, [msg(3, MARCH + timedelta(minutes=3)), msg(500, MARCH)])
    assert again.messages_new == 1
    commit(store, [msg(n, MARCH + timedelta(minutes=n)) for n in range(600, 640)])
    monkeypatch.setattr(layout, "MAP_AFTER", 10_000)  # another process: bisection only
    fresh = Store(tmp_path / "d").catalog("messages")
    stored = [m["id"] for m in store.messages()]
    assert len(stored) == 161 and len(fresh.names()) == 4
    assert cat._where == {i: fresh.where(i) for i in stored}


def test_a_store_with_only_instructions_sent_is_moved_too(tmp_path):
    """No workflow.json or notify.json to notice: meta.json tells the move is not done."""
    store = reviewed_store(tmp_path / "d")
    expected = records_snapshot(store)
    write_v2(store)
    (store.root / "workflow.json").unlink()
    (store.root / "notify.json").unlink()
    expected.update(reviews=[], outbox=[], notified={})
    opened = Store(tmp_path / "d")
    assert records_snapshot(opened) == expected
    assert set(json.loads((opened.root / "instructions.json").read_bytes())) == {"templates"}
    before = (opened.root / "meta.json").stat().st_mtime_ns
    Store(tmp_path / "d")  # moved once: the next open writes nothing
    assert (opened.root / "meta.json").stat().st_mtime_ns == before


def test_the_records_move_commits_in_order_and_says_what_it_moved(tmp_path, monkeypatch,
                                                                  caplog):
    """meta.json says schema 3 before the first record is copied; every shard is written
    and its folder fsynced before the old file goes (the commit), the store folder is
    fsynced after it; "moved" is recorded last; the log says how many records each file
    held (a record twice in a file counts, and is kept, once)."""
    import logging

    from tests.support import fsspy

    store = reviewed_store(tmp_path / "d")
    expected = records_snapshot(store)
    write_v2(store)
    root = store.root.resolve()
    path = root / "workflow.json"
    data = json.loads(path.read_bytes())
    first = next(iter(data["reviews"].values()))
    data["reviews"]["999"] = first  # the same record twice
    path.write_bytes(json.dumps(data).encode())
    counts = {"workflow.json": len(data["reviews"]) - 1 + len(data["outbox"]),
              "notify.json": len(json.loads((root / "notify.json").read_bytes())["events"]),
              "instructions.json": len(json.loads(
                  (root / "instructions.json").read_bytes())["sent"])}
    spy = fsspy.install(monkeypatch, unlinks=True)
    with caplog.at_level(logging.INFO, logger="retainer.store"):
        opened = Store(tmp_path / "d")
    assert records_snapshot(opened) == expected
    calls = spy.calls
    metas = [(i, json.loads(c.content or b"")) for i, c in enumerate(calls)
             if c.kind == "replace" and c.dest == str(root / "meta.json")]
    names = [[d["name"] for d in meta["meta"].values()] for _, meta in metas]
    assert [[d.get("version") for d in meta["meta"].values() if d["name"] == "schema"]
            for _, meta in metas] == [[3], [3]]
    assert "records_moved" not in names[0] and "records_moved" in names[-1]
    shard_writes = [i for i, c in enumerate(calls) if c.kind == "replace"
                    and "/store/index/" not in c.dest and Path(c.dest).parent.name in
                    ("reviews", "outbox", "notified", "instructions")]
    commit = next(i for i, c in enumerate(calls)
                  if c.kind == "unlink" and c.path == str(path))
    assert metas[0][0] < min(shard_writes) and max(shard_writes) < metas[-1][0]
    synced = {c.path for c in calls[:commit] if c.kind == "fsync_dir"}
    assert {str(root / f) for f in ("reviews", "outbox")} <= synced
    assert str(root) in {c.path for c in calls[commit:metas[-1][0]] if c.kind == "fsync_dir"}
    said = {r.getMessage().split(" records of ")[1].split(" ")[0]:
            int(r.getMessage().split(": ")[1].split(" ")[0])
            for r in caplog.records if r.getMessage().startswith("store upgraded: ")}
    assert said == counts


def test_a_move_killed_before_it_said_moved_keeps_what_it_committed(tmp_path):
    """Killed after the last file's commit (instructions.json rewritten with its templates
    alone) but before ``records_moved`` was written: the next open looks again, finds
    nothing left to move, and keeps every record already in the new shards."""
    store = reviewed_store(tmp_path / "d")
    expected = records_snapshot(store)
    write_v2(store)
    moved = Store(tmp_path / "d")
    assert records_snapshot(moved) == expected
    meta_path = moved.root / "meta.json"
    meta = json.loads(meta_path.read_bytes())
    meta["meta"] = {n: d for n, d in meta["meta"].items() if d["name"] != "records_moved"}
    meta_path.write_bytes(json.dumps(meta).encode())
    assert set(json.loads((moved.root / "instructions.json").read_bytes())) == {"templates"}
    assert records_snapshot(Store(tmp_path / "d")) == expected
    assert len(shard_files(moved, "instructions")) == 1
    assert "records_moved" in meta_path.read_text()


def test_shards_left_by_a_killed_records_move_are_removed_first(tmp_path):
    store = reviewed_store(tmp_path / "d")
    expected = records_snapshot(store)
    write_v2(store)
    root = store.root
    for folder in ("reviews", "index/reviews"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "s000007.json").write_bytes(json.dumps(
            {"reviews": {"1": {"id": "left", "reviewed_at": "2026-01-01"}}}).encode())
    (root / "index" / "reviews.generation").write_bytes(seal(b'"clean:old"'))
    opened = Store(tmp_path / "d")
    assert records_snapshot(opened) == expected
    assert [p.name for p in shard_files(opened, "reviews")][-1] != "s000007.json"
    assert not (root / "index" / "reviews" / "s000007.json").exists()


def test_records_roll_by_bytes_during_the_move(tmp_path, monkeypatch):
    from agent.store import migrate

    store = reviewed_store(tmp_path / "d")
    expected = records_snapshot(store)
    write_v2(store)
    monkeypatch.setattr(migrate, "SHARD_BYTES", 1500)
    opened = Store(tmp_path / "d")
    assert records_snapshot(opened) == expected
    shards = [[layout.doc_size(d) for d in json.loads(p.read_bytes())["reviews"].values()]
              for p in shard_files(opened, "reviews")]
    assert len(shards) > 3  # 44 reviews: one shard by count
    for this, after in pairwise(shards):  # each as full as it can be
        assert sum(this) <= 1500 < sum(this) + after[0]


def test_records_fill_each_shard_to_the_count_during_the_move(tmp_path, monkeypatch):
    """The move keeps the bound of the records' shards: each holds the count, no more,
    the last the rest."""
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 8)
    store = reviewed_store(tmp_path / "d")
    expected = records_snapshot(store)
    write_v2(store)
    opened = Store(tmp_path / "d")
    assert records_snapshot(opened) == expected
    assert [stored_count(p, "reviews") for p in shard_files(opened, "reviews")] == [8] * 5
    assert [stored_count(p, "sent") for p in shard_files(opened, "instructions")] \
        == [8, 1]


def test_instructions_json_without_templates_is_removed(tmp_path):
    store = reviewed_store(tmp_path / "d")
    expected = records_snapshot(store)
    write_v2(store)
    path = store.root / "instructions.json"
    data = json.loads(path.read_bytes())
    data.pop("templates")
    path.write_bytes(json.dumps(data).encode())
    opened = Store(tmp_path / "d")
    assert not path.exists() and not (store.root / "instructions.kept.json").exists()
    assert records_snapshot(opened)["instructions"] == expected["instructions"]


def test_a_record_twice_in_an_old_file_takes_one_place_in_the_new_shards(tmp_path, monkeypatch):
    """The move numbers its shards from s000001 and fills each to the count: a record
    found twice in workflow.json is copied (and counted) once."""
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 3)
    store = reviewed_store(tmp_path / "d")
    write_v2(store)
    path = store.root / "workflow.json"
    data = json.loads(path.read_bytes())
    first, second, third = list(data["reviews"].values())[:3]
    data["reviews"] = {"1": first, "2": first, "3": second, "4": third, "5": second}
    path.write_bytes(json.dumps(data).encode())
    opened = Store(tmp_path / "d")
    assert [p.name for p in shard_files(opened, "reviews")] == ["s000001.json"]
    assert sorted(e["id"] for e in wf.review_events(opened)) == sorted(
        d["id"] for d in (first, second, third))
