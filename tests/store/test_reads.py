"""Reads (agent/store/reads.py) and the derived data they keep: counts per source
(counts.py, chunk files in ``store/.counts/``) and thread activity (activity.py, chunk
files in ``store/cache/threads/``). A cache may be lost or damaged at any time: the answer
stays the one the committed shards give."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.errors import StoreError
from agent.models import Identity, Message
from agent.store import Store, layout
from agent.store.memory import MemoryStore
from tests.store.contract import (
    MARIA,
    OWNER_KEYS,
    SAM,
    SHOP,
    StoreFactory,
    inbound,
    outbound,
    png,
    stamp,
)


@pytest.fixture(params=[Store, MemoryStore], ids=["disk", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Store:
    monkeypatch.setattr(layout, "SHARD_DOCS", 2)  # several shards from a few messages
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 2)
    factory: StoreFactory = request.param
    store = factory(tmp_path / "data")
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
        store.add_contractor("Sam Chen", [SAM])
    return store


def commit(store: Store, records: list[Any], source: str = "inbox") -> Any:
    with store.writing():
        return store.commit_page(source, "imap", records, owner_keys=OWNER_KEYS)


def test_messages_newest_first_across_shards(store: Store) -> None:
    commit(store, [inbound("a", 1), inbound("b", 9, SAM, thread="s"), inbound("c", 3)])
    commit(store, [inbound("d", 2, SAM, thread="s"), inbound("e", 8, SHOP, thread="n")])
    commit(store, [inbound("f", 5, SHOP, thread="n")], source="news")
    assert len(store.month_names()) >= 3
    assert [m["remote_id"] for m in store.messages()] == ["b", "e", "f", "c", "d", "a"]
    assert [m["remote_id"] for m in store.messages(contractor="Sam Chen")] == ["b", "d"]
    assert [m["remote_id"] for m in store.messages(source="news")] == ["f"]
    assert [m["remote_id"] for m in store.messages(source="inbox", contractor="Maria Lopez")
            ] == ["c", "a"]
    sam = store.find_contractor("Sam Chen")["id"]
    assert {m["contractor_id"] for m in store.messages(contractor="Sam Chen")} == {sam}
    assert sorted(m["remote_id"] for m in store.iter_messages()) == list("abcdef")
    assert [m["remote_id"] for m in store.thread_messages(
        store.messages(contractor="Sam Chen")[0]["thread_id"])] == ["d", "b"]
    assert store.stored_counts() == {"messages": 6, "deliverables": 0}
    assert store.counts() == {"messages": 6, "deliverables": 0, "contractors": 2,
                              "candidates": 1}
    assert store.source_counts() == {"inbox": {"messages": 5, "deliverables": 0},
                                     "news": {"messages": 1, "deliverables": 0}}


def test_threads_merge_their_entries_from_every_shard(store: Store) -> None:
    commit(store, [inbound("a", 1), inbound("x", 2, SAM, thread="s")])
    commit(store, [outbound("b", 7), inbound("y", 3, SAM, thread="s")])
    commit(store, [inbound("n", 4, SHOP, thread="n")], source="news")
    threads = store.threads()
    assert [(t["remote_id"], t["first_at"], t["last_at"]) for t in threads] == [
        ("t1", stamp(1), stamp(7)), ("n", stamp(4), stamp(4)), ("s", stamp(2), stamp(3))]
    assert [t["identity"] for t in threads] == [MARIA.key, SHOP.key, SAM.key]
    assert [t["remote_id"] for t in store.threads("news")] == ["n"]
    tid = threads[0]["id"]
    assert len(store.thread_shards(tid)) == 2
    assert [m["remote_id"] for m in store.thread_messages(tid)] == ["a", "b"]


def test_deliverables_by_contractor_and_review_state(store: Store) -> None:
    commit(store, [inbound("a", 1, files=[png("a.png", b"a")]),
                   inbound("b", 2, SAM, thread="s", files=[png("b.png", b"b")]),
                   inbound("c", 3, files=[png("c.png", b"c")])])
    commit(store, [inbound("d", 4, SAM, thread="s", files=[png("d.png", b"d")])])
    docs = store.deliverables()
    assert [d["filename"] for d in docs] == ["a.png", "b.png", "c.png", "d.png"]
    assert [d["filename"] for d in store.deliverables(contractor="Sam Chen")] == \
        ["b.png", "d.png"]
    with store.writing():
        store.update_deliverable(docs[0]["id"], review_status="approved")
        store.update_deliverable(docs[3]["id"], review_status="approved")
    assert [d["filename"] for d in store.deliverables(unreviewed=True)] == ["b.png", "c.png"]
    assert [d["filename"] for d in store.deliverables(unreviewed=True, contractor="Sam Chen")
            ] == ["b.png"]
    assert sorted(d["filename"] for d in store.iter_deliverables()) == \
        ["a.png", "b.png", "c.png", "d.png"]
    with store.writing():  # the work follows a merge
        store.merge_contractors("Maria Lopez", "Sam Chen")
    maria = store.find_contractor("Maria Lopez")["id"]
    assert {d["contractor_id"] for d in store.deliverables(contractor="Maria Lopez")} == {maria}
    assert len(store.deliverables(contractor="Maria Lopez")) == 4


def test_a_deliverable_by_id_or_unique_prefix(store: Store) -> None:
    commit(store, [inbound("a", 1, files=[png(f"{n}.png", b"%d" % n, str(n)) for n in range(8)])])
    ids = [d["id"] for d in store.deliverables()]
    first = ids[0]
    assert store.deliverable(first)["id"] == first
    assert store.deliverable(first[2:9])["id"] == first
    assert store.deliverable(first[:9])["id"] == first
    shared = next((a[:3] for a in ids for b in ids if a != b and a[:3] == b[:3]), "d_")
    with pytest.raises(StoreError) as err:
        store.deliverable(shared)
    assert str(err.value) == f'several deliverables match "{shared}"; see `retainer deliverables`'
    with pytest.raises(StoreError, match='no deliverable match "d_zz"'):
        store.deliverable("d_zz")
    assert store.stored_deliverable("d_0000000000000000") is None
    assert store.stored_message("m_0000000000000000") is None


def test_stored_messages_of_a_page_at_once_across_shards(store: Store) -> None:
    commit(store, [inbound(f"m{n}", n) for n in range(1, 6)])  # three shards of two
    by_remote = {m["remote_id"]: m for m in store.iter_messages()}
    wanted = [by_remote["m1"]["id"], by_remote["m5"]["id"], "m_0000000000000000",
              by_remote["m3"]["id"], by_remote["m1"]["id"]]
    found = store.stored_messages(wanted)
    assert found == {i: store.stored_message(i) for i in wanted[:2] + wanted[3:4]}
    assert store.stored_messages([]) == {}
    assert store.stored_messages(iter(["m_0000000000000000"])) == {}


def test_backfill_locators_name_only_waiting_files_of_that_source(store: Store) -> None:
    ann = Identity("email", "ann@example.com")
    skipped = {"status": "not_downloaded"}
    commit(store, [
        inbound("late", 5, ann, thread="a", files=[_att("x.pdf", **skipped)], extra={"uid": 5}),
        inbound("early", 1, ann, thread="a", files=[_att("y.pdf", **skipped)],
                extra={"uid": 1}),
        inbound("inline", 2, ann, thread="a", files=[_att("s.png", inline=True, **skipped)]),
        inbound("kept", 3, ann, thread="a", files=[png("k.png", b"k")]),
    ])
    commit(store, [inbound("other", 4, ann, thread="b", files=[_att("z.pdf", **skipped)])],
           source="news")
    with store.writing():
        store.update_source_state("inbox", cursor={"uid": 5})
        store.update_source_state("news", cursor={"uid": 4})
        store.add_contractor("Ann", [ann])
    found = store.backfill_locators("inbox")
    assert [f["uid"] for f in found] == [1, 5]
    assert found[0]["stored"] == {"remote_id": "early", "thread_remote_id": "a",
                                  "subject": "Logo",
                                  "recipients": [{"address": "owner@example.com",
                                                  "name": "Owner"}]}
    assert [f["stored"]["remote_id"] for f in store.backfill_locators("news")] == ["other"]


def _att(name: str, **kw: Any) -> Any:
    from agent.models import Attachment

    return Attachment(name, remote_id=name, **kw)


def test_counts_are_kept_per_shard_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
    commit(store, [inbound("a", 1, files=[png("a.png", b"a")]), inbound("n", 2, SHOP,
                                                                        thread="n")])
    assert store.source_counts() == {"inbox": {"messages": 2, "deliverables": 1}}
    chunks = sorted((store.root / ".counts").glob("*.json"))
    assert chunks and not (store.root / ".counts.json").exists()
    kept: dict[str, Any] = {}
    for chunk in chunks:
        doc = orjson.loads(chunk.read_bytes())
        assert doc["version"] == 1
        kept.update(doc["entries"])
    assert set(kept) == {f"messages/{store.month_names()[0]}.json",
                         f"deliverables/{store.shard_names('deliverables')[0]}.json"}
    for entry in kept.values():
        assert len(entry["stamp"]) == 3 and isinstance(entry["counts"], dict)

    def rewrite(entry: Callable[[dict[str, Any]], Any]) -> None:
        for chunk in chunks:
            doc = orjson.loads(chunk.read_bytes())
            chunk.write_bytes(orjson.dumps({**doc, "entries": {
                k: entry(v) for k, v in doc["entries"].items()}}))

    rewrite(lambda v: {**v, "counts": {"inbox": 99}})
    assert store.source_counts() == {"inbox": {"messages": 99, "deliverables": 99}}  # trusted
    commit(store, [inbound("b", 3)], source="news")  # a changed shard is counted again
    assert store.source_counts() == {"inbox": {"messages": 2, "deliverables": 99},
                                     "news": {"messages": 1, "deliverables": 0}}
    chunks = sorted((store.root / ".counts").glob("*.json"))
    kept = {}
    for chunk in chunks:  # and its new count kept: the next read does not parse it again
        kept.update(orjson.loads(chunk.read_bytes())["entries"])
    for relative, entry in kept.items():
        st = (store.root / relative).stat()
        assert entry["stamp"] == [st.st_ino, st.st_mtime_ns, st.st_size]
    assert kept[f"messages/{store.month_names()[0]}.json"]["counts"] == {"inbox": 2,
                                                                          "news": 1}
    for damaged in (b"[1, 2]", b"{not json", b'{"version": 0, "entries": {}}'):
        for chunk in chunks:
            chunk.write_bytes(damaged)
        assert store.source_counts() == {"inbox": {"messages": 2, "deliverables": 1},
                                         "news": {"messages": 1, "deliverables": 0}}
    rewrite(lambda v: {"stamp": v["stamp"], "counts": 7})  # entries of the wrong shape
    assert store.source_counts() == {"inbox": {"messages": 2, "deliverables": 1},
                                     "news": {"messages": 1, "deliverables": 0}}
    (store.root / "messages" / "notes.txt").write_bytes(b"not a shard")
    (store.root / "messages" / "s000009.json.bak").write_bytes(b"{}")
    assert store.source_counts()["inbox"]["messages"] == 2


def test_thread_activity_is_cached_per_shard_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
    commit(store, [inbound("a", 1), outbound("b", 2)])
    first = store.thread_activity()
    (cache,) = (store.root / "cache" / "threads").glob("*.json")
    assert not (store.root / "cache" / "threads.json").exists()
    data = orjson.loads(cache.read_bytes())
    assert data["version"] == 1 and set(data["entries"]) == set(store.month_names())
    written = cache.stat()
    assert store.thread_activity() == first
    assert (cache.stat().st_ino, cache.stat().st_mtime_ns) == \
        (written.st_ino, written.st_mtime_ns)  # nothing changed: the cache is not rewritten
    (tid, entry), = first.items()
    assert (entry["last_dir"], entry["out"], entry["identity"]) == ("out", [stamp(2)], MARIA.key)
    for damaged in (orjson.dumps({**data, "version": 0}), b"{not json"):
        cache.write_bytes(damaged)
        assert store.thread_activity() == first
        assert orjson.loads(cache.read_bytes())["version"] == 1  # written again
    commit(store, [inbound("c", 3)])
    assert store.thread_activity()[tid]["last_dir"] == "in"
    assert store.thread_activity()[tid]["last_at"] == stamp(3)


def test_thread_activity_across_shards(store: Store) -> None:
    commit(store, [inbound("a", 1), outbound("b", 6)])
    commit(store, [outbound("c", 2), inbound("d", 3, SAM, thread="s")])
    commit(store, [inbound("e", 4), inbound("f", 5, SAM, thread="s")])
    activity = store.thread_activity()
    maria_thread = store.messages(contractor="Maria Lopez")[0]["thread_id"]
    entry = activity[maria_thread]
    b = next(m for m in store.messages() if m["remote_id"] == "b")
    assert entry == {"out": [stamp(2), stamp(6)], "last_at": stamp(6), "last_dir": "out",
                     "identity": MARIA.key, "last_id": b["id"]}
    sam_thread = store.messages(contractor="Sam Chen")[0]["thread_id"]
    assert activity[sam_thread]["out"] == [] and activity[sam_thread]["last_dir"] == "in"
    again = store.thread_activity()
    assert again == activity


def test_a_thread_with_two_people_is_with_the_one_it_started_with(store: Store) -> None:
    """The thread listing and the thread activity agree on who a thread is with: the
    first counterpart, whoever wrote later."""
    commit(store, [outbound("o", 1, to=SHOP), inbound("a", 2), inbound("b", 3, SAM)])
    (thread,) = store.threads()
    assert thread["identity"] == SHOP.key
    assert store.thread_activity()[thread["id"]]["identity"] == SHOP.key


def test_backfill_locators_of_messages_sent_at_the_same_time(store: Store) -> None:
    ann = Identity("email", "ann@example.com")
    commit(store, [inbound(f"m{n}", 1, ann, thread=f"t{n}", extra={"uid": n},
                           files=[_att(f"{n}.pdf", status="not_downloaded")])
                   for n in range(3)])
    with store.writing():
        store.update_source_state("inbox", cursor={"uid": 3})
        store.add_contractor("Ann", [ann])
    assert sorted(f["uid"] for f in store.backfill_locators("inbox")) == [0, 1, 2]


def test_who_wrote_last_is_the_latest_message_whatever_shard_holds_it(store: Store) -> None:
    """Older mail that arrives later (another folder, a backfill) lands in a later shard:
    it does not make the thread look as if the contractor wrote last, when the owner's
    reply is newer."""
    commit(store, [inbound("a", 1), outbound("s1", 1, SAM, thread="s")])
    commit(store, [outbound("b", 5), inbound("s2", 2, SAM, thread="s")])
    commit(store, [inbound("c", 3)])  # older than the reply, stored after it
    assert len(store.month_names()) >= 3
    thread = store.messages(contractor="Maria Lopez")[0]["thread_id"]
    b = next(m for m in store.messages() if m["remote_id"] == "b")
    activity = store.thread_activity()
    assert set(activity) == {t["id"] for t in store.threads()}  # every thread, Sam's too
    sam = store.messages(contractor="Sam Chen")[0]["thread_id"]
    assert (activity[sam]["out"], activity[sam]["last_dir"]) == ([stamp(1)], "in")
    entry = activity[thread]
    assert (entry["last_at"], entry["last_dir"], entry["last_id"]) == (stamp(5), "out", b["id"])


def test_counts_skip_what_is_not_a_shard_and_old_cache_files_go(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """Files beside the shards (a backup, notes, a temp file) are skipped, not the end of
    the listing; the single cache files of earlier versions, which grew with the store,
    are removed once their chunked successors are written."""
    monkeypatch.setattr(layout, "SHARD_DOCS", 2)
    store = Store(tmp_path / "data")
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
    for n in range(3):
        commit(store, [inbound(f"a{n}", n), inbound(f"b{n}", n + 0.5)])
    assert len(store.month_names()) == 3
    for stray in ("notes.txt", "s000001.json.bak", ".tmp-s000004.json", "README"):
        (store.root / "messages" / stray).write_bytes(b"not a shard")
    shard = store.root / "messages" / f"{store.month_names()[0]}.json"
    (store.root / "messages" / "s000000 copy.json").write_bytes(shard.read_bytes())
    old_counts = store.root / ".counts.json"
    old_threads = store.root / "cache" / "threads.json"
    old_counts.write_bytes(b"{}")
    old_threads.parent.mkdir(exist_ok=True)
    old_threads.write_bytes(b"{}")
    assert store.source_counts()["inbox"]["messages"] == 6
    assert len(store.thread_activity()) == 1
    assert not old_counts.exists() and not old_threads.exists()


def test_a_thread_opened_by_system_mail_is_with_who_writes_in_it_later(store: Store) -> None:
    """A platform's notification (with nobody) opens the thread; the contractor's message
    in a later shard says who the thread is with."""
    commit(store, [inbound("n", 1, MARIA, extra={"system": True}),
                   inbound("s1", 1, SAM, thread="s")])
    commit(store, [inbound("m", 2)])
    assert len(store.month_names()) >= 2
    tid = store.messages(contractor="Maria Lopez")[0]["thread_id"]
    (entry,) = [a for t, a in store.thread_activity().items() if t == tid]
    assert entry["identity"] == MARIA.key
    (thread,) = [t for t in store.threads() if t["id"] == tid]
    assert thread["identity"] == MARIA.key


def shard_reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The shards ``store`` opens from now on (folder/name), in order."""
    reads: list[str] = []
    real = type(store).read_shard

    def spy(self: Store, folder: str, name: str) -> Any:
        reads.append(f"{folder}/{name}")
        return real(self, folder, name)

    monkeypatch.setattr(type(store), "read_shard", spy)
    return reads


def test_the_threads_of_named_shards_come_from_those_shards_alone(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """``shard_threads(store, names)`` (a rebuild of the delegation model after a page)
    answers for the shards named and opens no other: not every shard at each sync."""
    from agent.store.activity import shard_threads

    for n in range(3):
        commit(store, [inbound(f"a{n}", n), outbound(f"b{n}", n + 0.5)])
    first, *_, last = store.month_names()
    whole = shard_threads(store)
    reads = shard_reads(store, monkeypatch)
    assert shard_threads(store, [last]) == {last: whole[last]}
    assert shard_threads(store, [last, first]) == {last: whole[last], first: whole[first]}
    assert set(reads) <= {f"messages/{last}", f"messages/{first}"}


def test_a_merged_contractors_work_is_listed_from_shards_that_name_only_them(
        store: Store) -> None:
    """After a merge, a shard holding only the merged contractor's work records their old
    contractor id: the listing finds it by their identities, which are the kept one's."""
    commit(store, [inbound("a", 1, files=[png("a.png", b"a"), png("b.png", b"b", "2")])])
    commit(store, [inbound("s", 2, SAM, thread="s",
                           files=[png("s.png", b"s"), png("t.png", b"t", "2")])])
    assert len(store.shard_names("deliverables")) == 2
    with store.writing():
        store.merge_contractors("Maria Lopez", "Sam Chen")
    maria = store.find_contractor("Maria Lopez")["id"]
    for unreviewed in (False, True):
        docs = store.deliverables(contractor="Maria Lopez", unreviewed=unreviewed)
        assert [d["filename"] for d in docs] == ["a.png", "b.png", "s.png", "t.png"]
        assert {d["contractor_id"] for d in docs} == {maria}


def test_a_dateless_message_is_the_oldest_of_its_thread(store: Store) -> None:
    """Mail with no usable date (sent ``""``) comes first in its thread, oldest first, as
    it comes last in the listing, newest first."""
    commit(store, [inbound("b", 2), Message("nodate", None, MARIA,  # type: ignore[arg-type]
                                            thread_remote_id="t1"), inbound("a", 1)])
    assert [m["remote_id"] for m in store.messages()] == ["b", "a", "nodate"]
    tid = store.messages()[0]["thread_id"]
    assert [m["remote_id"] for m in store.thread_messages(tid)] == ["nodate", "a", "b"]


def test_the_work_of_a_dateless_message_is_the_oldest(store: Store) -> None:
    commit(store, [inbound("b", 2, files=[png("b.png", b"b")]),
                   Message("nodate", None, MARIA,  # type: ignore[arg-type]
                           thread_remote_id="t1", attachments=(png("a.png", b"a"),))])
    assert [d["filename"] for d in store.deliverables()] == ["a.png", "b.png"]


def test_a_dateless_message_is_not_a_threads_last_unless_it_is_all_there_is(
        store: Store) -> None:
    """Mail with no usable date counts as the oldest of its thread in the activity too: the
    owner's dated reply stays the last message (no contractor "waiting"); a thread holding
    only dateless mail still has a last message, with its direction and id."""
    commit(store, [inbound("a", 1), outbound("b", 2),
                   Message("nodate", None, MARIA,  # type: ignore[arg-type]
                           thread_remote_id="t1"),
                   Message("alone", None, SAM,  # type: ignore[arg-type]
                           thread_remote_id="s")])
    ids = {m["remote_id"]: m for m in store.messages()}
    activity = store.thread_activity()
    replied = activity[ids["b"]["thread_id"]]
    assert (replied["last_at"], replied["last_dir"], replied["last_id"]) == \
        (stamp(2), "out", ids["b"]["id"])
    assert replied["out"] == [stamp(2)]
    alone = activity[ids["alone"]["thread_id"]]
    assert (alone["last_at"], alone["last_dir"], alone["last_id"]) == \
        ("", "in", ids["alone"]["id"])


def test_a_dateless_message_is_backfilled_first(store: Store) -> None:
    """The files waiting for a backfill are listed oldest first; mail with no date counts
    as the oldest, as in the listings."""
    ann = Identity("email", "ann@example.com")
    waiting = [_att("x.pdf", status="not_downloaded")]
    commit(store, [inbound("dated", 1, ann, thread="a", files=waiting, extra={"uid": 2}),
                   Message("nodate", None, ann, thread_remote_id="a",  # type: ignore[arg-type]
                           attachments=tuple(waiting), extra={"uid": 1})])
    with store.writing():
        store.update_source_state("inbox", cursor={"uid": 2})
        store.add_contractor("Ann", [ann])
    assert [f["uid"] for f in store.backfill_locators("inbox")] == [1, 2]


def test_a_listing_by_source_and_contractor_opens_only_shards_holding_both(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    commit(store, [inbound("a1", 1), inbound("a2", 2)])  # inbox, Maria
    commit(store, [inbound("n1", 3), inbound("n2", 4, SHOP, thread="n")], source="news")
    commit(store, [inbound("s1", 5, SAM, thread="s"), inbound("s2", 6, SAM, thread="s")])
    (mine, news, sams) = store.month_names()
    reads = shard_reads(store, monkeypatch)
    assert [m["remote_id"] for m in store.messages(source="inbox", contractor="Maria Lopez")
            ] == ["a2", "a1"]
    assert reads == [f"messages/{mine}"]
    reads.clear()
    assert [m["remote_id"] for m in store.messages(source="news")] == ["n2", "n1"]
    assert [m["remote_id"] for m in store.messages(contractor="Sam Chen")] == ["s2", "s1"]
    assert reads == [f"messages/{news}", f"messages/{sams}"]


def test_the_review_queue_is_listed_without_opening_a_shard(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """``deliverables --unreviewed`` reads each shard's queue (kept beside its summary),
    not the shards."""
    commit(store, [inbound("a", 1, files=[png("a.png", b"a"), png("b.png", b"b", "2")]),
                   inbound("s", 2, SAM, thread="s", files=[png("s.png", b"s")])])
    with store.writing():
        store.update_deliverable(store.deliverables()[0]["id"], review_status="approved")
    reads = shard_reads(store, monkeypatch)
    assert [d["filename"] for d in store.deliverables(unreviewed=True)] == ["b.png", "s.png"]
    assert [d["filename"] for d in store.deliverables(unreviewed=True, contractor="Sam Chen")
            ] == ["s.png"]
    assert reads == []


def test_a_thread_across_shards_spans_all_of_them_and_keeps_its_first_counterpart(
        store: Store) -> None:
    """A thread's entries in several shards merge into one: the earliest and the latest
    message of any shard (older mail stored later, from a backfill or another folder,
    moves its start back), and who it is with stays who it started with."""
    commit(store, [outbound("o", 3, to=SHOP), inbound("a", 4, SHOP)])
    commit(store, [inbound("old", 1, SHOP), inbound("c", 6)])  # older mail, stored later
    commit(store, [inbound("b", 5, SAM)])  # the last shard's entry is with Sam
    assert len(store.month_names()) == 3
    (thread,) = store.threads()
    assert (thread["first_at"], thread["last_at"]) == (stamp(1), stamp(6))
    assert thread["identity"] == SHOP.key
    assert store.thread_activity()[thread["id"]]["identity"] == SHOP.key


def test_every_message_iterated_names_its_contractor_as_the_roster_has_it_now(
        store: Store) -> None:
    """``iter_messages`` (what an interrupted sync announces again) resolves each message's
    contractor when read: after a merge, the kept one; nobody for a stranger."""
    commit(store, [inbound("m", 1), inbound("s", 2, SAM, thread="s")])
    commit(store, [inbound("n", 3, SHOP, thread="n")])
    with store.writing():
        store.merge_contractors("Maria Lopez", "Sam Chen")
    maria = store.find_contractor("Maria Lopez")["id"]
    assert {m["remote_id"]: m["contractor_id"] for m in store.iter_messages()} == {
        "m": maria, "s": maria, "n": None}


def test_a_contractors_deliverables_open_only_the_shards_holding_their_work(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    commit(store, [inbound("a", 1, files=[png("a.png", b"a"), png("b.png", b"b", "2")])])
    commit(store, [inbound("s", 2, SAM, thread="s",
                           files=[png("s.png", b"s"), png("t.png", b"t", "2")])])
    (_marias, sams) = store.shard_names("deliverables")
    reads = shard_reads(store, monkeypatch)
    assert [d["filename"] for d in store.deliverables(contractor="Sam Chen")] == \
        ["s.png", "t.png"]
    assert reads == [f"deliverables/{sams}"]


def test_counts_when_the_old_cache_file_cannot_be_removed(tmp_path: Path) -> None:
    """The single ``.counts.json`` of earlier versions is removed when it can be; when it
    cannot (here a folder of that name), the counts are still given."""
    store = Store(tmp_path / "data")
    commit(store, [inbound("a", 1), inbound("b", 2)])
    (store.root / ".counts.json").mkdir()
    assert store.source_counts() == {"inbox": {"messages": 2, "deliverables": 0}}
    assert (store.root / ".counts.json").is_dir()


def test_a_rewritten_shard_is_read_again_once_then_comes_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page that adds to the last shard changes its stamp: the next activity reads that
    shard again and writes its chunk back; the call after reads no shard at all."""
    store = Store(tmp_path / "data")
    commit(store, [inbound("a", 1)])
    store.thread_activity()
    commit(store, [outbound("b", 2)])
    (name,) = store.month_names()
    reads = shard_reads(store, monkeypatch)
    ((tid, entry),) = store.thread_activity().items()
    assert (entry["last_dir"], entry["out"]) == ("out", [stamp(2)])
    assert reads == [f"messages/{name}"]
    reads.clear()
    assert store.thread_activity() == {tid: entry}
    assert reads == []


def test_activity_when_the_old_cache_file_cannot_be_removed(tmp_path: Path) -> None:
    """The single ``cache/threads.json`` of earlier versions is removed when it can be;
    when it cannot (a read-only data folder; here a folder of that name), the activity is
    still given."""
    store = Store(tmp_path / "data")
    commit(store, [inbound("a", 1), outbound("b", 2)])
    (store.root / "cache" / "threads.json").mkdir(parents=True)
    (entry,) = store.thread_activity().values()
    assert (entry["last_dir"], entry["out"]) == ("out", [stamp(2)])
    assert (store.root / "cache" / "threads.json").is_dir()


def test_a_shard_gone_between_the_listing_and_its_stat_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting takes no lock: a shard another process removes (an upgrade moving the
    records) after the folder was listed is skipped, and the shards listed after it are
    still counted."""
    monkeypatch.setattr(layout, "SHARD_DOCS", 2)
    store = Store(tmp_path / "data")
    for n in range(3):
        commit(store, [inbound(f"a{n}", n), inbound(f"b{n}", n + 0.5)])
    first, *others = store.month_names()
    folder = store.root / "messages"
    real_scandir = os.scandir

    def listing(path: Any = ".") -> Any:
        entries = list(real_scandir(path))
        if Path(path) == folder:  # the first shard listed is removed before its stat
            entries.sort(key=lambda e: e.name != f"{first}.json")
            (folder / f"{first}.json").rename(tmp_path / "moved.json")
            monkeypatch.setattr(os, "scandir", real_scandir)
        return iter(entries)

    monkeypatch.setattr(os, "scandir", listing)
    assert len(others) == 2
    assert store.source_counts() == {"inbox": {"messages": 4, "deliverables": 0}}
