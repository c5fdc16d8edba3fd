"""Read models (agent.store.readmodels, the review-queue side of the shard summaries):
what a listing reads from them always equals what the full data gives, after syncs,
reviews, roster changes, another process's writes and a writer killed with SIGKILL; a
missing, damaged or foreign model is rebuilt, never trusted."""

from __future__ import annotations

import logging
import os
import shutil
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


# -- the module's own contract, with a probe model built by counting builders -------------------


class Probe:
    """A builder that counts its calls and answers from the store as it is now."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, store: Store) -> dict[str, Any]:
        self.calls += 1
        return {"build": self.calls,
                "waiting": sorted(d["id"] for d in store.deliverables(unreviewed=True))}


def small_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """Twelve messages, eight deliverables in shards of three."""
    from agent.store import layout

    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 3)
    store = Store(tmp_path / "data")
    fill(store, count=12)
    return store


def test_a_model_is_served_while_its_inputs_are_unchanged_and_rebuilt_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = small_store(tmp_path, monkeypatch)
    build = Probe()
    first = readmodels.view(store, "probe", "v1", ["deliverables", "workflow"], build)
    assert first["build"] == 1 and first["waiting"]
    path = readmodels.views_dir(store) / "probe.json"
    stamps = readmodels.input_stamps(store.root, ("deliverables", "workflow"))
    # format, version and the digest first: what _current reads of a model
    assert path.read_bytes().startswith(
        b'{"format":1,"version":"v1","digest":"%s","inputs":' % _digest(stamps).encode())
    assert orjson.loads(path.read_bytes())["inputs"] == stamps
    reader = Store(store.data_dir)  # another process; inputs named in another order, twice
    assert readmodels.view(reader, "probe", "v1", ("workflow", "deliverables", "workflow"),
                           build) == first
    assert build.calls == 1  # served from the file, nothing built
    assert readmodels.view(reader, "probe", "v2", ["deliverables", "workflow"],
                           build)["build"] == 2  # another derivation: built
    assert readmodels.view(reader, "probe", "v2", ["deliverables", "workflow"],
                           build)["build"] == 2
    with store.writing():  # a file that is no input of the model: still served
        store.add_contractor("Newcomer", [Identity("email", "new@example.com")])
    assert readmodels.view(Store(store.data_dir), "probe", "v2", ["deliverables", "workflow"],
                           build)["build"] == 2
    review_some(store)  # an input changed: never the stale model
    after = readmodels.view(Store(store.data_dir), "probe", "v2",
                            ["deliverables", "workflow"], build)
    assert after["build"] == 3 and after["waiting"] != first["waiting"]
    assert after["waiting"] == sorted(d["id"] for d in store.deliverables(unreviewed=True))
    assert readmodels.view(Store(store.data_dir), "probe", "v2",
                           ["deliverables", "workflow"], build) == after
    saved = orjson.loads(path.read_bytes())  # the header vouches for it, the data is gone
    path.write_bytes(orjson.dumps({k: v for k, v in saved.items() if k != "data"}))
    assert readmodels.view(Store(store.data_dir), "probe", "v2",
                           ["deliverables", "workflow"], build)["build"] == 4


def _digest(stamps: list[list[Any]]) -> str:
    from hashlib import blake2b

    return blake2b(orjson.dumps(stamps), digest_size=16).hexdigest()


def test_a_model_built_while_a_writer_changed_its_inputs_is_not_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = small_store(tmp_path, monkeypatch)
    build = Probe()

    def racing(reader: Store) -> dict[str, Any]:
        data = build(reader)
        review_some(Store(store.data_dir))  # another process reviews meanwhile
        return data

    mixed = readmodels.view(store, "probe", "v1", ["deliverables", "workflow"], racing)
    assert mixed["build"] == 1
    assert not (readmodels.views_dir(store) / "probe.json").exists()
    again = readmodels.view(Store(store.data_dir), "probe", "v1",
                            ["deliverables", "workflow"], build)
    assert again["build"] == 2
    assert again["waiting"] == sorted(d["id"] for d in store.deliverables(unreviewed=True))


def test_stale_and_refresh_rebuild_only_the_models_saved_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = small_store(tmp_path, monkeypatch)
    monkeypatch.setattr(readmodels, "BUILDERS", {})
    used, unused = Probe(), Probe()
    readmodels.register("used", "v1", ["workflow", "deliverables", "workflow"], used)
    readmodels.register("unused", "v1", ["roster"], unused)
    assert readmodels.BUILDERS["used"] == ("v1", ("deliverables", "workflow"), used)
    assert readmodels.stale(store, "used") is None  # never saved
    assert readmodels.stale(store, "nobody") is None  # no such model
    assert readmodels.refresh(store) == []
    assert used.calls == unused.calls == 0
    readmodels.view(store, "used", "v1", ["deliverables", "workflow"], used)
    assert readmodels.stale(store, "used") is False
    assert readmodels.refresh(store) == [] and used.calls == 1
    review_some(store)
    assert readmodels.stale(store, "used") is True
    assert readmodels.refresh(store) == ["used"]
    assert used.calls == 2 and unused.calls == 0
    assert readmodels.stale(store, "used") is False
    assert readmodels.stale(store, "unused") is None
    served = readmodels.view(Store(store.data_dir), "used", "v1", ["deliverables", "workflow"],
                             used)
    assert served["build"] == 2 and used.calls == 2  # the refreshed model is served
    assert served["waiting"] == sorted(d["id"] for d in store.deliverables(unreviewed=True))
    readmodels.register("used", "v2", ["deliverables", "workflow"], used)  # a newer derivation
    assert readmodels.stale(store, "used") is True
    assert readmodels.refresh(store) == ["used"] and used.calls == 3
    path = readmodels.views_dir(store) / "used.json"
    path.write_bytes(path.read_bytes().replace(b'"version"', b'"vers!on', 1))  # damaged
    assert readmodels.stale(store, "used") is True
    assert readmodels.refresh(store) == ["used"] and used.calls == 4
    assert readmodels.stale(store, "used") is False


def test_input_stamps_list_every_file_of_the_inputs_in_a_fixed_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = small_store(tmp_path, monkeypatch)
    review_some(store)
    root = store.root
    (root / "messages" / ".tmp-killed.json").write_bytes(b"{}")  # a writer's temp file
    (root / "messages" / "NOTES").write_bytes(b"not a shard")  # sorts before the shards

    def stamp(relative: str) -> list[Any]:
        st = os.stat(root / relative)
        return [relative, st.st_ino, st.st_mtime_ns, st.st_size]

    def shards(folder: str) -> list[list[Any]]:
        return [stamp(f"{folder}/{p.name}") for p in sorted((root / folder).glob("*.json"))
                if not p.name.startswith(".")]

    assert shards("messages") and len(shards("deliverables")) > 1 and shards("reviews")
    assert not (root / "instructions.json").exists()
    expected = [stamp("contracts.json"), *shards("deliverables"),
                ["instructions.json", 0, 0, -1], *shards("instructions"),
                *shards("messages"), stamp("roster.json"), *shards("reviews"),
                *shards("outbox")]
    parts = ["workflow", "roster", "messages", "instructions", "deliverables", "contracts"]
    assert readmodels.input_stamps(root, parts) == expected
    assert readmodels.input_stamps(root, [*reversed(parts), "roster"]) == expected
    with pytest.raises(ValueError, match="unknown read model input 'nope'"):
        readmodels.input_stamps(root, ["roster", "nope"])
    assert readmodels.input_stamps(tmp_path / "nothing", ["messages", "roster"]) == [
        ["roster.json", 0, 0, -1]]


def test_a_partial_result_is_found_only_for_the_state_it_was_saved_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = small_store(tmp_path, monkeypatch)
    inputs = ("roster", "workflow")
    stamps = readmodels.input_stamps(store.root, inputs)
    assert readmodels.load_partial(store, "probe", "v1", inputs) is None
    readmodels.save_partial(store, "probe", "v1", inputs, stamps, {"kept": [1, 2]})
    path = readmodels.views_dir(store) / "probe.partial.json"
    assert orjson.loads(path.read_bytes())["inputs"] == stamps
    assert readmodels.load_partial(Store(store.data_dir), "probe", "v1",
                                   ["workflow", "roster"]) == {"kept": [1, 2]}
    assert readmodels.load_partial(store, "probe", "v2", inputs) is None
    saved = path.read_bytes()
    review_some(store)  # an input changed after ``stamps`` were taken
    assert readmodels.load_partial(store, "probe", "v1", inputs) is None
    readmodels.save_partial(store, "probe", "v1", inputs, stamps, {"kept": "a mix"})
    assert path.read_bytes() == saved  # not kept
    now = readmodels.input_stamps(store.root, inputs)
    readmodels.save_partial(store, "probe", "v1", inputs, now, {"kept": [3]})
    assert readmodels.load_partial(store, "probe", "v1", inputs) == {"kept": [3]}
    memory = MemoryStore(tmp_path / "memory")
    readmodels.save_partial(memory, "probe", "v1", inputs,
                            readmodels.input_stamps(memory.root, inputs), {"kept": [4]})
    assert readmodels.load_partial(memory, "probe", "v1", inputs) is None
    assert not readmodels.views_dir(memory).exists()


def test_shard_parts_computes_only_the_parts_of_shards_written_since(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = small_store(tmp_path, monkeypatch)
    names = store.shard_names("deliverables")
    assert len(names) >= 3
    seen: list[list[str]] = []

    def part_of(docs: list[Any]) -> list[Any]:
        ids = sorted(d["id"] for d in docs)
        seen.append(ids)
        return [[i, next(d.get("review_status") for d in docs if d["id"] == i)] for i in ids]

    def truth_parts(reader: Store) -> list[Any]:
        return [[[d["id"], d.get("review_status")]
                 for d in sorted(reader.read_shard("deliverables", n).docs("deliverables"),
                                 key=lambda d: d["id"])]
                for n in reader.shard_names("deliverables")]

    def parts(reader: Store, version: str = "p1", valid: Any = None) -> list[Any]:
        return readmodels.shard_parts(reader, "probe", version, "deliverables", part_of,
                                      *([valid] if valid else []))

    expected = truth_parts(store)
    assert parts(store) == expected and len(seen) == len(names)
    path = readmodels.views_dir(store) / "probe.parts.json"
    saved = orjson.loads(path.read_bytes())
    assert (saved["format"], saved["version"], saved["folder"]) == (1, "p1", "deliverables")
    assert list(saved["shards"]) == names  # in the store's order, each with its stamp
    assert [entry[0] for entry in saved["shards"].values()] == [
        list(store.shard_stamp("deliverables", n) or ()) for n in names]
    seen.clear()
    before = path.stat()
    assert parts(Store(store.data_dir)) == expected and seen == []  # all reused
    assert path.stat().st_ino == before.st_ino  # nothing changed: not written again
    review_some(store, every=100)  # reviews the oldest deliverable: its shard only
    written = [n for n in names if list(store.shard_stamp("deliverables", n) or ())
               != saved["shards"][n][0]]
    assert len(written) == 1
    assert parts(Store(store.data_dir)) == truth_parts(store) != expected
    assert len(seen) == 1
    seen.clear()
    assert parts(Store(store.data_dir), "p2") == truth_parts(store)  # another derivation
    assert len(seen) == len(names)
    seen.clear()
    assert parts(Store(store.data_dir), "p2", lambda part: part != truth_parts(store)[0]
                 ) == truth_parts(store)
    assert len(seen) == 1  # the part the check rejects is computed again
    saved = orjson.loads(path.read_bytes())
    gone = dict(saved, shards={**saved["shards"], "s999999": [[1, 2, 3], [["x", "y"]]]})
    path.write_bytes(orjson.dumps(gone))
    seen.clear()
    assert parts(Store(store.data_dir), "p2") == truth_parts(store) and seen == []
    assert list(orjson.loads(path.read_bytes())["shards"]) == names  # the shard gone dropped
    other = dict(saved, folder="messages")
    path.write_bytes(orjson.dumps(other))
    assert parts(Store(store.data_dir), "p2") == truth_parts(store)
    assert len(seen) == len(names)  # parts of another folder are not this folder's


def test_shard_parts_of_the_in_memory_store_are_computed_and_not_kept(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "data")
    fill(store, count=12)
    got = readmodels.shard_parts(store, "probe", "p1", "deliverables",
                                 lambda docs: sorted(d["id"] for d in docs))
    assert got == [sorted(d["id"] for d in store.read_shard("deliverables", n).docs(
        "deliverables")) for n in store.shard_names("deliverables")]
    assert got and got[0]
    assert not readmodels.views_dir(store).exists()


def test_models_are_kept_without_fsync_and_answered_when_they_cannot_be_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Derived data: a read command writes its models without fsync (a lost one is built
    again), and one it cannot write (the folder taken, data not JSON) still answers,
    saying at debug level which model and why."""
    from tests.support import fsspy

    store = small_store(tmp_path, monkeypatch)
    views = readmodels.views_dir(store)
    spy = fsspy.install(monkeypatch)
    readmodels.view(store, "probe", "v1", ["deliverables"], Probe())
    readmodels.shard_parts(store, "probe", "p1", "deliverables", len)
    readmodels.save_partial(store, "probe", "v1", ["roster"],
                            readmodels.input_stamps(store.root, ["roster"]), [1])
    assert sorted(p.name for p in views.iterdir()) == [
        "probe.json", "probe.partial.json", "probe.parts.json"]
    assert [c for c in spy.calls if c.kind.startswith("fsync")] == []
    monkeypatch.undo()

    shutil.rmtree(views)
    views.write_bytes(b"not a folder")
    caplog.set_level(logging.DEBUG, logger="retainer.store")
    build = Probe()
    expected = sorted(d["id"] for d in store.deliverables(unreviewed=True))
    assert readmodels.view(store, "probe", "v1", ["deliverables"], build)["waiting"] == expected
    assert readmodels.shard_parts(store, "probe", "p1", "deliverables", len) == [
        len(store.read_shard("deliverables", n).docs("deliverables"))
        for n in store.shard_names("deliverables")]
    assert readmodels.view(store, "probe", "v1", ["deliverables"], build)["build"] == 2
    views.unlink()
    assert readmodels.view(store, "sets", "v1", ["roster"], lambda s: {"ids": {1, 2}}) == {
        "ids": {1, 2}}
    logged = [r.getMessage() for r in caplog.records if r.name == "retainer.store"]
    assert sum(m.startswith("read model probe not saved: [Errno ") for m in logged) == 2
    assert sum(m.startswith("read model parts probe not saved: [Errno ") for m in logged) == 1
    assert "read model sets not saved: Type is not JSON serializable: set" in logged
    assert not (views / "sets.json").exists()
