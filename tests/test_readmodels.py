"""Read models (agent.store.readmodels, the review-queue side of the shard summaries):
what a listing reads from them always equals what the full data gives, after syncs,
reviews, roster changes, another process's writes and a writer killed with SIGKILL; a
missing, damaged or foreign model is rebuilt, never trusted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent import report
from agent.files import read_derived
from agent.models import Attachment, Contract, Identity, Message
from agent.stats import Facts, refresh_read_models, roster_rows
from agent.store import Store, readmodels
from agent.store import workflow as wf
from agent.store.memory import MemoryStore

OWNER = Identity("email", "owner@example.com", name="Owner")
OWNER_KEYS = frozenset({OWNER.key})
NOW = datetime(2026, 6, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]


def page(first: int, count: int, *, people: int = 4) -> list[Any]:
    """Briefs from the owner and replies with files, in threads of three."""
    out: list[Any] = []
    for n in range(first, first + count):
        c = n % people
        who = Identity("email", f"c{c}@example.com", name=f"Contractor {c}")
        thread = f"<t{c}-{n // 3}@example.com>"
        when = NOW - timedelta(days=200) + timedelta(hours=7 * n)
        if n % 3 == 0:
            out.append(Message(f"<o{n}@example.com>", when - timedelta(hours=5), OWNER,
                               subject=f"Logo task {n}", text="Please draw it",
                               thread_remote_id=thread, recipients=(who,), direction="out"))
            continue
        atts = (Attachment(f"logo-{n}.png" if c % 2 else f"copy-{n}.pdf", "image/png",
                           data=b"x" * (50 + n)),)
        out.append(Message(f"<i{n}@example.com>", when, who, subject=f"Re: Logo task {n}",
                           text="Here it is", thread_remote_id=thread, attachments=atts))
    return out


def fill(store: Store, first: int = 0, count: int = 60) -> None:
    with store.writing():
        if first == 0:
            for c in range(4):
                store.add_contractor(f"Contractor {c}", [Identity("email", f"c{c}@example.com")],
                                     skills=["logo"] if c % 2 else ["copywriting", "logo"],
                                     rate=20.0 + c)
            store.commit_page("mail", "maildir", [Contract("k1", Identity("upwork", "u1"),
                                                           title="Retainer", spent=120.5,
                                                           started_at=NOW - timedelta(days=300))],
                              owner_keys=OWNER_KEYS)
        store.commit_page("mail", "maildir", page(first, count), owner_keys=OWNER_KEYS)


def review_some(store: Store, every: int = 2, offset: int = 0) -> None:
    with store.writing():
        items = []
        for n, doc in enumerate(store.deliverables(unreviewed=True)):
            if (n + offset) % every:
                continue
            received = datetime.fromisoformat(str(doc["received_at"]).replace("Z", "+00:00"))
            items.append((doc, {"status": "approved" if n % 3 else "changes_requested",
                                "rating": 1 + n % 5, "cost": 10.5 + n,
                                "when": received + timedelta(hours=3 + n)}))
        wf.record_reviews(store, items)


def truth(store: Store) -> Facts:
    """Facts read in full from the store, every part passed in: no read model is used."""
    return Facts(store.roster(), store.contractors(), store.deliverables(),
                 wf.review_events(store), wf.sent_instructions(store), store.contracts(),
                 wf.thread_activity(store))


def assert_consistent(store: Store) -> None:
    fresh = Store(store.data_dir)  # a new process's view: nothing cached in memory
    expected_rows = roster_rows(fresh, truth(fresh))
    assert roster_rows(fresh) == expected_rows
    for days in (30, 90, 365):
        since = timedelta(days=days)
        assert (report.build(fresh, now=NOW, since=since)
                == report.build(fresh, now=NOW, since=since, facts=truth(fresh)))
    everything = list(fresh.iter_deliverables())
    waiting = [d for d in everything if d.get("review_status") == "unreviewed"]
    got = fresh.deliverables(unreviewed=True)
    assert [d["id"] for d in got] == [d["id"] for d in
                                      sorted(waiting, key=lambda d: d.get("received_at") or "")]
    roster = fresh.roster()
    by_id = {d["id"]: d for d in everything}
    for doc in got:  # the stored document, its contractor resolved through the roster
        stored = by_id[doc["id"]]
        assert doc == dict(stored, contractor_id=roster.contractor_of(stored.get("identity"))
                           or stored.get("contractor_id"))


def model_path(store: Store) -> Path:
    return readmodels.views_dir(store) / "delegation.json"


def roster_path(store: Store) -> Path:
    return readmodels.views_dir(store) / "roster.json"


def test_the_delegation_model_follows_syncs_reviews_and_roster_changes(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    fill(store)
    assert_consistent(store)
    assert model_path(store).exists() and roster_path(store).exists()
    facts = Facts.load(Store(store.data_dir))
    roster_rows(Store(store.data_dir), facts)
    assert "deliverables" not in facts._parts  # answered from the model, no shard parsed

    review_some(store)
    assert_consistent(store)
    fill(store, 60, 45)  # a second sync: new work, new threads
    assert_consistent(store)
    review_some(store, every=3, offset=1)  # reviews again, a second round on some
    assert_consistent(store)
    with store.writing():
        cid = store.find_contractor("c1@example.com")["id"]
        store.update_contractor(cid, rate=99.0, skills=["copywriting"])
        store.add_contractor("Newcomer", [Identity("email", "new@example.com")])
    assert_consistent(store)
    with store.writing():
        wf.record_instruction(store, {"template": "logo-brief", "version": 1,
                                      "contractor_id": cid, "skill": "branding",
                                      "sent_at": "2026-01-10T09:00:00Z", "text": "Draw"})
    assert_consistent(store)
    with store.writing():
        store.merge_contractors("c2@example.com", "c3@example.com")
    assert_consistent(store)


def answers(store: Store) -> Any:
    """What the read models answer for: the roster and a report (a fresh process's view)."""
    fresh = Store(store.data_dir)
    return roster_rows(fresh), report.build(fresh, now=NOW, since=timedelta(days=60))


def test_a_missing_damaged_or_foreign_model_is_rebuilt(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    fill(store)
    review_some(store)
    expected = (roster_rows(store, truth(store)),
                report.build(store, now=NOW, since=timedelta(days=60), facts=truth(store)))
    assert answers(store) == expected
    views = readmodels.views_dir(store)
    assert sorted(p.name for p in views.iterdir()) == [
        "delegation-deliverables.parts.json", "delegation.json", "delegation.partial.json",
        "roster.json"]
    def stale_views(name: str) -> None:
        if name not in ("delegation", "roster"):  # consulted only when models are rebuilt
            for view in ("delegation", "roster"):
                (views / f"{view}.json").unlink()

    for name in ("delegation", "roster", "delegation.partial",
                 "delegation-deliverables.parts"):
        path = views / f"{name}.json"
        good = path.read_bytes()
        path.unlink()
        stale_views(name)
        assert answers(store) == expected
        assert path.exists()

        path.write_bytes(good[: len(good) // 2])  # cut short
        stale_views(name)
        assert answers(store) == expected
        assert orjson.loads(path.read_bytes())["data" if "parts" not in name else "shards"]

        saved = orjson.loads(good)
        forgeries: list[Any] = [
            dict(saved, version=f"{name}-0"),  # written by another derivation
            dict(saved, format=99),
            [1, 2],
        ]
        if "parts" not in name:
            forgeries += [
                dict(saved, inputs=saved["inputs"][:-1]),  # a file it never saw
                dict(saved, data={"works": [["only", "two"]]}),  # not our shape
                dict(saved, data=[1, 2]),
                dict(saved, data=[{"id": 1}]),
            ]
        if name == "delegation.partial":  # reused kinds of work and turnarounds, forged
            kept = saved["data"]
            first = next(iter(kept["rows"]))
            row = kept["rows"][first]
            shard = next(iter(kept["shards"]))
            forgeries += [dict(saved, data=dict(kept, rows={first: [*row[:6], 7, "x"]})),
                          dict(saved, data=dict(kept, rows={first: row[:3]})),
                          dict(saved, data=dict(kept, rows={
                              first: [None, *row[1:6], "forged", 99.0]})),
                          dict(saved, data=dict(kept, rows={
                              first: [*row[:5], ["forged"], "forged", 99.0]})),
                          # a shard as it was before: its threads are read again
                          dict(saved, data=dict(kept, shards={**kept["shards"],
                                                              shard: [0, 0, 0]},
                                                out={**kept["out"], shard: []})),
                          dict(saved, data=dict(kept, out={"s999999": ["t"]})),
                          dict(saved, data=dict(kept, shards=[]))]
        if name == "delegation-deliverables.parts":  # each shard's reduced deliverables
            shard, (stamp, part) = next(iter(saved["shards"].items()))
            forgeries += [dict(saved, folder="messages"),
                          dict(saved, shards={shard: [stamp, [{"id": 5}]]}),
                          dict(saved, shards={shard: [stamp, {"id": "x"}]}),
                          dict(saved, shards={shard: [stamp, [dict(part[0], review=3)]]}),
                          dict(saved, shards={shard: [[0, 0, 0], part[:1]]}),
                          dict(saved, shards={shard: [stamp]}),
                          dict(saved, shards={"s999999": [stamp, part]})]
        if name == "delegation":
            data = saved["data"]
            some = next(iter(data["contractors"]))
            group = data["contractors"][some]
            ragged = dict(group, works=dict(group["works"], t=[]))
            forgeries.append(dict(saved, data=dict(data, contractors={some: ragged})))
        for forged in forgeries:
            path.write_bytes(orjson.dumps(forged))
            stale_views(name)
            assert answers(store) == expected
        path.write_bytes(good)


def test_writes_of_another_process_make_the_model_stale(tmp_path: Path) -> None:
    reader = Store(tmp_path / "data")
    fill(reader)
    before = roster_rows(reader)
    writer = Store(reader.data_dir)  # another process: the reader's caches do not see it
    review_some(writer)
    after = roster_rows(reader)
    assert after != before
    assert after == roster_rows(reader, truth(reader))
    assert readmodels.stale(reader, "delegation") is False


def test_refresh_rebuilds_only_models_in_use(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    fill(store)
    assert refresh_read_models(store) == []  # nobody listed yet: nothing is built
    assert not model_path(store).exists()
    roster_rows(store)
    assert refresh_read_models(store) == []  # fresh
    fill(store, 60, 30)
    assert readmodels.stale(store, "delegation") is True
    assert readmodels.stale(store, "roster") is True
    assert sorted(refresh_read_models(store)) == ["delegation", "roster"]
    assert readmodels.stale(store, "delegation") is False
    assert readmodels.stale(store, "roster") is False
    facts = Facts.load(Store(store.data_dir))
    assert roster_rows(Store(store.data_dir), facts) == roster_rows(store, truth(store))
    assert "deliverables" not in facts._parts


def test_the_review_queue_side_is_rebuilt_when_lost_or_damaged(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    fill(store, count=90)
    review_some(store)
    index = store.root / "index" / "deliverables"
    sides = sorted(index.glob("*.queue.json"))
    assert sides
    expected = Store(store.data_dir).deliverables(unreviewed=True)
    sides[0].unlink()
    sides[-1].write_bytes(b"{]")
    assert Store(store.data_dir).deliverables(unreviewed=True) == expected
    assert sides[0].exists() and orjson.loads(read_derived(sides[-1]) or b"{}")["queue"] is not None
    # a side file left from before the shard changed (stale stamp) is not used
    old = sides[0].read_bytes()
    review_some(store)
    if sides[0].exists():
        sides[0].write_bytes(old)
    assert_consistent(store)


def test_the_in_memory_store_answers_without_files(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "data")
    with store.writing():
        store.add_contractor("Contractor 1", [Identity("email", "c1@example.com")],
                             skills=["logo"])
        store.commit_page("mail", "maildir", page(0, 30), owner_keys=OWNER_KEYS)
    rows = roster_rows(store)
    assert rows == roster_rows(store, truth(store))
    assert rows[0]["deliverables"] > 0
    assert store.deliverables(unreviewed=True)
    assert not readmodels.views_dir(store).exists()


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from agent.stats import refresh_read_models, roster_rows
    from agent.store import Store
    from tests.test_readmodels import fill, review_some
    store = Store(Path({data!r}))
    first = 60
    print("ready", flush=True)
    while True:
        fill(store, first, 9)
        review_some(store, every=2, offset=first)
        refresh_read_models(store)
        roster_rows(store)
        first += 9
""")


@pytest.mark.parametrize("delay", [0.15, 0.4, 0.9])
def test_a_writer_killed_at_any_point_leaves_consistent_reads(tmp_path: Path,
                                                               delay: float) -> None:
    store = Store(tmp_path / "data")
    fill(store)
    roster_rows(store)  # the model is in use, so the writer keeps refreshing it
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT),
                                                                 data=str(store.data_dir))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert_consistent(store)


def test_a_temp_file_left_by_a_killed_reader_is_removed(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    fill(store)
    roster_rows(store)
    left = readmodels.views_dir(store) / ".tmp-killed-reader"
    left.write_bytes(b"half a model")
    with Store(store.data_dir).writing():
        pass
    assert not left.exists()
    assert sorted(p.name for p in readmodels.views_dir(store).iterdir()) == [
        "delegation-deliverables.parts.json", "delegation.json", "delegation.partial.json",
        "roster.json"]
    assert oct(readmodels.views_dir(store).stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600"
               for p in readmodels.views_dir(store).iterdir())


def test_after_a_review_the_rebuild_reuses_kinds_of_work_and_turnarounds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.stats import _build_model, _model_doc
    from agent.store import layout

    monkeypatch.setattr(layout, "SHARD_DOCS", 20)  # many message shards, few of them new
    store = Store(tmp_path / "data")
    fill(store, count=90)
    roster_rows(store)
    partial = readmodels.views_dir(store) / "delegation.partial.json"
    rows = orjson.loads(partial.read_bytes())["data"]["rows"]
    assert rows and all(len(r) == 8 for r in rows.values())
    review_some(store)  # deliverables and reviews change; roster, instructions, mail do not
    reader = Store(store.data_dir)
    facts = Facts.load(reader)
    assert _build_model(reader, "delegation", facts=facts) == _model_doc(truth(store))
    assert facts._parts["activity"] == {}  # no thread's messages were needed: all reused
    assert roster_rows(Store(store.data_dir)) == roster_rows(store, truth(store))
    old_threads = set(store.thread_activity())
    fill(store, 90, 12)  # new mail: the turnarounds of its threads' deliverables only
    new_threads = set(store.thread_activity()) - old_threads
    reader = Store(store.data_dir)
    facts = Facts.load(reader)
    assert _build_model(reader, "delegation", facts=facts) == _model_doc(truth(store))
    kept = orjson.loads(partial.read_bytes())["data"]
    assert len(kept["shards"]) > 4  # the threads of the shards the page wrote, only:
    assert set(facts._parts["activity"]) <= new_threads | set(kept["out"][max(kept["out"])])


def test_a_sync_that_stored_mail_leaves_the_read_models_in_use_fresh(tmp_path: Path) -> None:
    from tests.support.workflow_mail import OWNER as OWNER_ADDRESS
    from tests.support.workflow_mail import TASKS, _deliver, _mail, run, synced

    config = synced(tmp_path)
    run(config, "contractors", "--json")  # a reader saved the models
    store = Store(tmp_path / "data")
    assert readmodels.stale(store, "roster") is False
    task = TASKS[0]
    _deliver(tmp_path / "Mail", _mail(task.contractor, task.name, OWNER_ADDRESS,
                                      f"Re: {task.subject}", datetime.now(UTC),
                                      "<late-version@example.com>", "One more version.",
                                      attachment=("late-v2.png", b"png" * 50)), "late")
    run(config, "sync")
    assert readmodels.stale(store, "roster") is False  # rebuilt by the sync itself
    assert readmodels.stale(store, "delegation") is False
    rows = {r["name"]: r for r in orjson.loads(run(config, "contractors", "--json").stdout)}
    assert rows == {r["name"]: r for r in roster_rows(store, truth(store))}
    assert rows[task.name]["deliverables"] == sum(t.name == task.name for t in TASKS) + 1
