"""The shard catalog (agent/store/layout.py) on its own, over real shard files.

What the store relies on: a new document goes to the open shard until it holds
``shard_docs`` documents or ``SHARD_BYTES`` bytes; a document is found by id in the shard
that holds it, before and after the id map is built; summaries say what a shard holds
and are rebuilt from the shard whenever they do not match it; another process's writes
are seen unless the folder's generation says nothing changed.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.files import read_derived, seal
from agent.store import layout
from agent.store.layout import Catalog, chain_key, doc_size, shard_docs, shard_name, shard_number
from agent.store.storage import Shard, file_stamp
from tests.support import fsspy


def make_catalog(root: Path, folder: str = "messages", *, disk: bool = True,
                 reads: list[str] | None = None) -> Catalog:
    """A catalog over ``root/folder``; the names of the shards it reads go to ``reads``."""
    shard_dir, index_dir = root / folder, root / "index" / folder
    shard_dir.mkdir(parents=True, exist_ok=True)
    if not index_dir.exists():
        index_dir.mkdir(parents=True)

    def reader(name: str) -> Shard:
        if reads is not None:
            reads.append(name)
        return Shard(shard_dir / f"{name}.json")

    return Catalog(folder, shard_dir, index_dir, reader, disk=disk)


def store_docs(cat: Catalog, docs: list[dict[str, Any]],
               threads: list[dict[str, Any]] = ()) -> dict[str, list[str]]:
    """Write documents as the store does: each to the shard holding it, else a placed one."""
    table = layout.TABLES[cat.folder][0]
    cat.will_write()
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        out.setdefault(cat.where(doc["id"]) or cat.place(doc), []).append(doc)
    for name, group in out.items():
        shard = Shard(cat.shard_dir / f"{name}.json")
        batches = [(table, group, "id")]
        if threads and cat.folder == "messages":
            batches.append(("threads", list(threads), "id"))
        shard.upsert_tables(batches)
        cat.written(name, shard)
    cat.forget_pending()
    cat.flush()
    return {name: [d["id"] for d in group] for name, group in out.items()}


def message(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"m{n:04d}", "source": "inbox", "identity": "email:maria@example.com",
            "contractor_id": "c_maria", "sent_at": f"2026-03-{1 + n % 28:02d}T10:00:00",
            "thread_id": f"t{n % 3}", **extra}


def deliverable(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"d{n:04d}", "source": "inbox", "identity": "email:maria@example.com",
            "contractor_id": "c_maria", "received_at": f"2026-03-{1 + n:02d}T10:00:00",
            "review_status": "unreviewed", "thread_id": "t1", "work": "logo", **extra}


def test_shard_names_numbers_and_sizes():
    assert shard_name(7) == "s000007" and shard_name(1234567) == "s1234567"
    assert [shard_number(n) for n in ("s000012", "s1234567", "s12345", "2024-05", "x000001")] \
        == [12, 1234567, 0, 0, 0]
    assert (shard_docs("messages"), shard_docs("deliverables")) == (1000, 250)
    doc = {"id": "m1", "subject": "é"}
    assert doc_size(doc) == len(orjson.dumps(doc)) + 12
    odd = {"id": "m2", "when": {1, 2}}  # not JSON: still sized, by its repr
    assert doc_size(odd) == len(repr(odd)) + 12
    big = {"id": 2**70}  # too big for orjson
    assert doc_size(big) == len(repr(big)) + 12


def test_chain_key_needs_identity_place_and_work():
    full = {"identity": "email:a@x", "thread_id": "t1", "work": "logo"}
    assert chain_key(full) == "email:a@x|t1|logo"
    contract = {"identity": "upwork:7", "extra": {"contract_remote_id": "c9"}, "work": "logo"}
    assert chain_key(contract) == "upwork:7|c9|logo"
    assert chain_key({**contract, "thread_id": "t2"}) == "upwork:7|t2|logo"  # thread first
    for missing in ("identity", "thread_id", "work"):
        assert chain_key({k: v for k, v in full.items() if k != missing}) is None
    assert chain_key({**full, "thread_id": None, "extra": None}) is None


def test_summary_of_a_deliverable_shard(tmp_path):
    cat = make_catalog(tmp_path, "deliverables")
    docs = [
        deliverable(3),
        deliverable(1, review_status="approved", version=2, version_of="d0009"),
        deliverable(2, identity="email:sam@example.com", contractor_id=None, source=None,
                    work="banner"),
        deliverable(4, version=1, received_at="2026-03-09T10:00:00"),  # same time, lower
        deliverable(5, thread_id=None, identity=None),  # no chain
    ]
    docs[3]["received_at"] = docs[0]["received_at"]
    store_docs(cat, docs)
    summary = layout.summarize("deliverables", Shard(cat.shard_dir / "s000001.json"))
    assert summary["ids"] == ["d0001", "d0002", "d0003", "d0004", "d0005"]
    assert summary["identities"] == ["email:maria@example.com", "email:sam@example.com"]
    assert summary["sources"] == ["", "inbox"]
    assert summary["contractors"] == ["c_maria"]
    assert (summary["first"], summary["last"]) == ("2026-03-02T10:00:00", "2026-03-06T10:00:00")
    assert summary["unreviewed"] == ["d0003", "d0002", "d0004", "d0005"]  # shard order
    assert summary["version"] == layout.SUMMARY_VERSION and summary["stamp"] is None
    logo = "email:maria@example.com|t1|logo"
    assert summary["chains"] == {
        logo: {"key": logo, "latest": "d0004", "latest_at": "2026-03-04T10:00:00",
               "version": 1, "root": "d0004"},
        "email:sam@example.com|t1|banner": {
            "key": "email:sam@example.com|t1|banner", "latest": "d0002",
            "latest_at": "2026-03-03T10:00:00", "version": 1, "root": "d0002"},
    }
    assert "threads" not in summary


def test_latest_version_wins_by_time_then_version(tmp_path):
    cat = make_catalog(tmp_path, "deliverables")
    when = "2026-03-05T10:00:00"
    store_docs(cat, [deliverable(1, received_at=when, version=3, version_of="d0000"),
                     deliverable(2, received_at=when, version=2),
                     deliverable(3, received_at="2026-03-01T10:00:00", version=9)])
    (chain,) = layout.summarize("deliverables",
                                Shard(cat.shard_dir / "s000001.json"))["chains"].values()
    assert (chain["latest"], chain["version"], chain["root"]) == ("d0001", 3, "d0000")
    assert cat.chain(chain["key"]) == chain
    assert make_catalog(tmp_path, "deliverables").chain(chain["key"]) == chain  # another process
    assert cat.chain("nobody|t|x") is None


def test_summary_of_a_message_shard_keeps_its_threads(tmp_path):
    cat = make_catalog(tmp_path)
    threads = [{"id": "t0", "first_at": "a", "last_at": "b"}, {"id": "t1", "first_at": "c"}]
    store_docs(cat, [message(1), message(2, sent_at=None)], threads)
    summary = layout.summarize("messages", Shard(cat.shard_dir / "s000001.json"))
    assert (summary["first"], summary["last"]) == ("", "2026-03-02T10:00:00")
    assert summary["threads"] == {t["id"]: t for t in threads}
    assert "unreviewed" not in summary and "chains" not in summary
    assert cat.threads("s000001") == {t["id"]: t for t in threads}


def test_new_documents_fill_the_open_shard_then_start_the_next(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "SHARD_DOCS", 3)
    cat = make_catalog(tmp_path)
    placed = store_docs(cat, [message(n) for n in range(5)])  # one page across two shards
    assert placed == {"s000001": ["m0000", "m0001", "m0002"], "s000002": ["m0003", "m0004"]}
    placed = store_docs(cat, [message(n) for n in range(3, 8)])  # two kept where they are
    assert placed == {"s000002": ["m0003", "m0004", "m0005"], "s000003": ["m0006", "m0007"]}
    assert cat.names() == ["s000001", "s000002", "s000003"]
    assert [cat.shards[n]["count"] for n in cat.names()] == [3, 3, 2]
    assert make_catalog(tmp_path).place(message(9)) == "s000003"  # looks at the shards first


def test_shards_roll_by_bytes_and_a_big_document_gets_one_alone(tmp_path, monkeypatch):
    small, big = message(1), message(2, text="x" * 3000)
    monkeypatch.setattr(layout, "SHARD_BYTES", doc_size(small) * 2 + 1)
    for disk in (True, False):
        cat = make_catalog(tmp_path / str(disk), disk=disk)
        placed = store_docs(cat, [message(1), message(3), message(4)])
        assert placed == {"s000001": ["m0001", "m0003"], "s000002": ["m0004"]}
        assert store_docs(cat, [big]) == {"s000003": ["m0002"]}  # full: would not fit
        assert store_docs(cat, [message(5)]) == {"s000004": ["m0005"]}
    assert cat.shards["s000003"]["bytes"] == doc_size(big)  # in memory: counted, not stat'ed
    assert not list((tmp_path / "False" / "index").rglob("*.*"))  # no summaries on disk


def test_placement_counts_documents_placed_but_not_written_yet(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "SHARD_DOCS", 2)
    cat = make_catalog(tmp_path)
    assert [cat.place(message(n)) for n in range(5)] == [
        "s000001", "s000001", "s000002", "s000002", "s000003"]
    cat.forget_pending()  # the page was not written
    assert cat.place(message(9)) == "s000001"


def test_lookup_by_id_before_and_after_the_map_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "SHARD_DOCS", 4)
    monkeypatch.setattr(layout, "MAP_AFTER", 3)
    cat = make_catalog(tmp_path)
    store_docs(cat, [message(n) for n in range(10)])
    fresh = make_catalog(tmp_path)  # another process: bisection, then the map
    expected = {f"m{n:04d}": f"s{1 + n // 4:06d}" for n in range(10)}
    assert [fresh.where(i) for i in ("m0000", "m0005", "m0009")] == [
        "s000001", "s000002", "s000003"]
    assert fresh._where is None  # MAP_AFTER lookups answered by bisection
    assert fresh.where("m0001") == "s000001" and fresh._where is not None  # then the map
    for _ in range(2):
        assert {i: fresh.where(i) for i in expected} == expected
        assert fresh.where("m9999") is None and fresh.where("") is None
    assert fresh._where is not None  # built, and kept up to date by the writes
    store_docs(fresh, [message(n) for n in range(10, 13)])
    assert fresh.where("m0010") == fresh.where("m0011") == "s000003"
    assert fresh.where("m0012") == "s000004"
    assert list(fresh.ids()) == [*sorted(expected), "m0010", "m0011", "m0012"]
    assert list(make_catalog(tmp_path).ids()) == list(fresh.ids())  # not looked at yet


def test_pages_looked_up_at_once_count_towards_the_map(tmp_path, monkeypatch):
    """``where_many`` counts each id as a lookup: pages totalling more than MAP_AFTER ids
    build the map once, as single lookups do (a long sync), and fewer do not."""
    monkeypatch.setattr(layout, "SHARD_DOCS", 4)
    monkeypatch.setattr(layout, "MAP_AFTER", 4)
    store_docs(make_catalog(tmp_path), [message(n) for n in range(10)])
    cat = make_catalog(tmp_path)
    assert cat.where_many(["m0001", "m9999"]) == {"m0001": "s000001"} and cat._where is None
    assert cat.where_many(["m0005", "m0009"]) == {"m0005": "s000002", "m0009": "s000003"}
    assert cat._where is None  # four lookups: not more than MAP_AFTER
    assert cat.where_many(["m0008"]) == {"m0008": "s000003"} and cat._where is not None
    assert cat.where_many([]) == {} and cat.where_many(["m0002", "m0404"]) == {
        "m0002": "s000001"}


def derived_json(path: Path) -> Any:
    """A summary or side file as the catalog reads it: sealed JSON."""
    payload = read_derived(path)
    assert payload is not None, f"{path.name} is not sealed whole"
    return json.loads(payload)


def test_summaries_and_side_files_describe_their_shard(tmp_path):
    cat = make_catalog(tmp_path)
    store_docs(cat, [message(n) for n in (2, 1)], [{"id": "t1"}])
    shard = cat.shard_dir / "s000001.json"
    stamp = list(file_stamp(shard) or ())
    summary = derived_json(cat.index_dir / "s000001.json")
    assert summary["stamp"] == stamp and summary["count"] == 2
    assert summary["version"] == layout.SUMMARY_VERSION
    assert "ids" not in summary and "threads" not in summary  # kept beside it
    ids = derived_json(cat.index_dir / "s000001.ids.json")
    assert ids == {"version": layout.SUMMARY_VERSION, "stamp": stamp, "ids": ["m0001", "m0002"]}
    threads = derived_json(cat.index_dir / "s000001.threads.json")
    assert threads["threads"] == {"t1": {"id": "t1"}} and threads["stamp"] == stamp
    assert not (cat.index_dir / "s000001.chains.json").exists()
    reads: list[str] = []
    fresh = make_catalog(tmp_path, reads=reads)  # another process: the summaries will do
    assert fresh.names() == ["s000001"] and fresh.where("m0002") == "s000001"
    assert list(fresh.threads("s000001")) == ["t1"] and fresh.shards["s000001"]["count"] == 2
    assert reads == []


def test_summaries_that_do_not_match_are_rebuilt(tmp_path):
    cat = make_catalog(tmp_path)
    store_docs(cat, [message(n) for n in range(4)], [{"id": "t1"}])
    index = cat.index_dir
    for damage in ("version", "stamp", "garbage", "torn", "lost"):
        summary = derived_json(index / "s000001.json")
        whole = seal(json.dumps(summary).encode())
        if damage == "version":
            summary["version"] = layout.SUMMARY_VERSION - 1
            summary["count"] = 99
        elif damage == "stamp":
            summary["stamp"] = [1, 2, 3]
            summary["count"] = 99
        elif damage == "torn":  # new bytes over the old: right version and stamp, bad seal
            summary["count"] = 99
        raw = json.dumps(summary).encode()
        (index / "s000001.json").write_bytes(
            b"{" if damage == "garbage" else raw + whole[len(whole) - 17:]
            if damage == "torn" else seal(raw))
        if damage == "lost":
            for path in index.iterdir():
                path.unlink()
        fresh = make_catalog(tmp_path)
        assert fresh.names() == ["s000001"] and fresh.shards["s000001"]["count"] == 4
        assert fresh.shard_ids("s000001") == ["m0000", "m0001", "m0002", "m0003"]
        assert list(fresh.threads("s000001")) == ["t1"]
        rebuilt = derived_json(index / "s000001.json")
        assert rebuilt["count"] == 4 and rebuilt["version"] == layout.SUMMARY_VERSION
        # kept with the shard's stamp: the next process reads the summary, not the shard
        assert rebuilt["stamp"] == list(file_stamp(cat.shard_dir / "s000001.json") or ())
        reads: list[str] = []
        again = make_catalog(tmp_path, reads=reads)
        assert again.names() == ["s000001"] and again.where("m0003") == "s000001"
        assert list(again.threads("s000001")) == ["t1"] and reads == []


@pytest.mark.parametrize("kind", ["ids", "threads"])
def test_a_stale_side_file_is_rebuilt_from_the_shard(tmp_path, kind):
    cat = make_catalog(tmp_path)
    store_docs(cat, [message(n) for n in range(3)], [{"id": "t1"}])
    side = cat.index_dir / f"s000001.{kind}.json"
    stale = derived_json(side)
    stale["stamp"] = [0, 0, 0]
    stale[kind] = ["m9999"] if kind == "ids" else {"t9": {}}
    side.write_bytes(seal(json.dumps(stale).encode()))
    fresh = make_catalog(tmp_path)
    assert fresh.where("m0002") == "s000001" and fresh.where("m9999") is None
    assert list(fresh.threads("s000001")) == ["t1"]
    reads: list[str] = []  # rebuilt with the shard's stamp: the next process trusts it
    again = make_catalog(tmp_path, reads=reads)
    assert again.where("m0002") == "s000001" and list(again.threads("s000001")) == ["t1"]
    assert reads == []


def mark(root: Path) -> bytes:
    """The messages folder's change mark, as a reader reads it."""
    return read_derived(root / "index" / "messages.generation") or b""


def test_another_process_writes_are_seen_unless_the_folder_is_unchanged(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(layout, "SHARD_DOCS", 2)
    reader, writer = make_catalog(tmp_path), make_catalog(tmp_path)
    assert reader.names() == []
    store_docs(writer, [message(n) for n in range(3)])
    generation = read_derived(tmp_path / "index" / "messages.generation")
    assert generation and generation.startswith(b'"clean:')
    assert reader.names() == ["s000001", "s000002"] and reader.where("m0002") == "s000002"
    # unchanged clean generation: nothing is looked at again (a shard dropped in by hand
    # is not seen) ...
    Shard(tmp_path / "messages" / "s000003.json").upsert_many("messages", [message(7)])
    assert reader.names() == ["s000001", "s000002"]
    # ... until a writer marks the folder: then every shard is
    writer.will_write()
    assert mark(tmp_path).startswith(b'"dirty:')
    assert reader.names() == ["s000001", "s000002", "s000003"]
    assert reader.where("m0007") == "s000003"
    writer.flush()
    assert mark(tmp_path) != generation
    (tmp_path / "messages" / "s000003.json").unlink()
    (tmp_path / "index" / "messages.generation").unlink()  # lost: look at every shard
    assert reader.names() == ["s000001", "s000002"] and reader.where("m0007") is None


def test_shards_are_kept_in_number_order_past_a_million(tmp_path):
    cat = make_catalog(tmp_path)
    for name in ("s1000000", "s999999", "s000002", "2024-05"):
        Shard(cat.shard_dir / f"{name}.json").upsert_many("messages", [message(len(name))])
    (cat.shard_dir / "s000003.json.tmp").write_text("{}")
    (cat.shard_dir / "s000004").write_text("{}")
    assert cat.names() == ["s000002", "s999999", "s1000000"]
    assert cat.place(message(1)) == "s1000000"  # the open shard is the last by number


def test_a_read_only_index_still_answers(tmp_path):
    cat = make_catalog(tmp_path)
    store_docs(cat, [message(1)])
    index = cat.index_dir
    for path in index.iterdir():
        path.unlink()
    index.rmdir()
    index.write_text("not a folder")  # every summary write fails with an OSError
    reads: list[str] = []
    fresh = make_catalog(tmp_path, reads=reads)
    assert fresh.names() == ["s000001"] and fresh.where("m0001") == "s000001"
    assert index.read_text() == "not a folder" and reads == ["s000001"]
    store_docs(fresh, [message(2)])  # writing goes on; only the summaries are not kept
    assert fresh.where("m0002") == "s000001"


def references_held(root: object) -> int:
    """What the cyclic garbage collector walks, at each full collection, for what ``root``
    holds: the references of every tracked container reachable from it (not through
    functions, modules or classes, which live for the process anyway)."""
    gc.collect()  # the collector untracks tuples and dicts holding only text on its way
    seen: set[int] = set()
    stack, total = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or not gc.is_tracked(obj) or callable(obj):
            continue
        seen.add(id(obj))
        referents = gc.get_referents(obj)
        total += len(referents)
        stack.extend(referents)
    return total


def test_what_a_catalog_keeps_costs_the_collector_a_few_references_a_shard(tmp_path,
                                                                          monkeypatch):
    """A sync keeps its catalog for its whole run: every shard's summary and ids. Held as
    lists, each id would be walked at every full collection (at 200,000 messages, ~0.6
    million references); held as tuples of text (untracked) and with the threads that only
    listings read left in their files, a shard costs a few references whatever it holds."""
    monkeypatch.setattr(layout, "SHARD_DOCS", 200)
    threads = [{"id": f"t{n}", "first_at": "a", "last_at": "b"} for n in range(20)]
    cat = make_catalog(tmp_path)
    store_docs(cat, [message(n) for n in range(400)], threads)
    before = references_held(cat)
    for first in range(400, 4400, 200):  # 20 more shards, a page at a time
        store_docs(cat, [message(n) for n in range(first, first + 200)], threads)
    assert len(cat.names()) == 22 and cat.where("m4399") == "s000022"
    assert (references_held(cat) - before) / 20 < 60  # ids alone would be 200
    assert cat.threads("s000007") == {t["id"]: t for t in threads}  # read from its file
    assert cat.shards["s000007"]["identities"] == ("email:maria@example.com",)


@pytest.mark.parametrize("folder", ["messages", "deliverables"])
def test_summing_up_every_shard_again_keeps_no_listing_side_in_memory(tmp_path, monkeypatch,
                                                                       folder):
    """A copied data folder (every stamp changed) or a lost index: every summary is made
    again from its shard, and the threads and review queue of each, which only listings
    read, are let go once in their files (at 200,000 messages they held 54 MB)."""
    monkeypatch.setattr(layout, "SHARD_DOCS", 200)
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 200)
    make = message if folder == "messages" else deliverable
    threads = [{"id": f"t{n}", "first_at": "a", "last_at": "b"} for n in range(20)]
    cat = make_catalog(tmp_path, folder)
    for first in range(0, 4400, 200):
        store_docs(cat, [make(n, received_at="2026-03-01T10:00:00") for n in
                         range(first, first + 200)], threads)
    for path in cat.index_dir.iterdir():
        path.unlink()
    reads: list[str] = []
    fresh = make_catalog(tmp_path, folder, reads=reads)
    empty = references_held(make_catalog(tmp_path / "none", folder))
    tracemalloc.start()
    assert len(fresh.names()) == 22 and len(reads) == 22  # every shard summed up again
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert (references_held(fresh) - empty) / 22 < 60
    assert held / 22 < 50_000, held  # the queue kept (200 deliverables): 150 kB
    side = "threads" if folder == "messages" else "queue"
    (fresh.index_dir / f"s000007.{side}.json").unlink()  # let go, so asked of the shard
    if folder == "messages":
        assert fresh.threads("s000007") == {t["id"]: t for t in threads}
    else:
        assert [d["id"] for d in fresh.queue("s000007")] == [
            f"d{n:04d}" for n in range(1200, 1400)]
    assert reads[22:] == ["s000007"]


def test_the_review_queue_a_write_produced_is_let_go_once_in_its_file(tmp_path, monkeypatch):
    """A deliverable in the review queue holds lists (its files), which the collector walks:
    a long sync does not keep every written shard's queue in memory, it reads it back."""
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 50)
    cat = make_catalog(tmp_path, "deliverables")

    def page(first: int) -> list[dict[str, Any]]:
        return [deliverable(n, files=[{"filename": f"f{n}.png", "size": n}])
                for n in range(first, first + 50)]

    store_docs(cat, page(0))
    before = references_held(cat)
    for first in range(50, 550, 50):  # ten more shards, a page at a time
        store_docs(cat, page(first))
    assert len(cat.names()) == 11
    assert (references_held(cat) - before) / 10 < 60  # 50 queued deliverables: 250
    assert [d["id"] for d in cat.queue("s000004")] == [f"d{n:04d}" for n in range(150, 200)]


def test_ids_read_back_from_their_files_cost_the_collector_a_few_references_a_shard(
        tmp_path, monkeypatch):
    """The next sync reads every shard's ids from its side file: kept as tuples of text
    too, not as lists the collector walks id by id."""
    monkeypatch.setattr(layout, "SHARD_DOCS", 200)
    store_docs(make_catalog(tmp_path), [message(n) for n in range(2000)])
    fresh = make_catalog(tmp_path)  # another process
    assert fresh.where("m1999") == "s000010" and fresh.where("m0000") == "s000001"
    assert references_held(fresh) / 10 < 60  # ids alone would be 200


def test_side_data_no_file_holds_stays_in_memory(tmp_path):
    reads: list[str] = []
    memory = make_catalog(tmp_path / "memory", disk=False, reads=reads)
    store_docs(memory, [message(1)], [{"id": "t1"}])
    assert list(memory.threads("s000001")) == ["t1"] and reads == []  # no file to read
    cat = make_catalog(tmp_path / "disk")
    store_docs(cat, [message(1)])
    index = cat.index_dir
    for path in index.iterdir():
        path.unlink()
    index.rmdir()
    index.write_text("not a folder")  # every summary write fails
    fresh = make_catalog(tmp_path / "disk", reads=reads)
    store_docs(fresh, [message(2)], [{"id": "t2"}])
    assert reads == ["s000001"]  # the summary, rebuilt once (no file could keep it)
    assert list(fresh.threads("s000001")) == ["t2"] and reads == ["s000001"]  # kept


def test_in_memory_catalog_writes_nothing(tmp_path):
    cat = make_catalog(tmp_path, disk=False)
    store_docs(cat, [message(1)])
    cat.refresh()
    assert cat.names() == ["s000001"] and cat.where("m0001") == "s000001"
    assert not list((tmp_path / "index").rglob("*.*"))
    assert cat.shards["s000001"]["stamp"] is None


def test_the_review_queue_side_holds_the_unreviewed_deliverables_as_stored(tmp_path):
    cat = make_catalog(tmp_path, "deliverables")
    docs = [deliverable(1), deliverable(2, review_status="approved"), deliverable(3)]
    store_docs(cat, docs)
    assert cat.queue("s000001") == [docs[0], docs[2]]
    queue = derived_json(cat.index_dir / "s000001.queue.json")
    assert queue["queue"] == [docs[0], docs[2]]
    reads: list[str] = []
    fresh = make_catalog(tmp_path, "deliverables", reads=reads)  # another process
    assert fresh.names() == ["s000001"]
    assert fresh.queue("s000001") == [docs[0], docs[2]] and reads == []  # from the side file


def test_at_one_time_the_higher_version_wins_and_none_counts_as_one(tmp_path):
    cat = make_catalog(tmp_path, "deliverables")
    when = "2026-03-05T10:00:00"
    store_docs(cat, [deliverable(1, received_at=when, version=2),
                     deliverable(2, received_at=when, version=3),  # stored later, higher
                     deliverable(3, received_at=when, thread_id="t2", version=2),
                     deliverable(4, received_at=when, thread_id="t2")])  # no version: 1
    chains = layout.summarize("deliverables", Shard(cat.shard_dir / "s000001.json"))["chains"]
    assert {c["latest"]: c["version"] for c in chains.values()} == {"d0002": 3, "d0003": 2}


def test_summaries_are_derived_data_written_without_fsync(tmp_path, monkeypatch):
    cat = make_catalog(tmp_path)
    spy = fsspy.install(monkeypatch)
    store_docs(cat, [message(1)], [{"id": "t1"}])
    index = str(cat.index_dir.resolve()) + "/"
    written = [c.dest for c in spy.calls if c.kind == "replace" and c.dest.startswith(index)]
    assert len(written) == 3  # summary, ids and threads side files: new, so made whole
    derived = str((tmp_path / "index").resolve())  # with the folder's generation mark
    assert not [c for c in spy.calls if c.kind != "replace" and c.path.startswith(derived)]
    # from then on rewritten in place: no temp file, no rename, no inode freed
    files = sorted(p for p in (tmp_path / "index").rglob("*") if p.is_file())
    inodes = {p: p.stat().st_ino for p in files}
    spy.calls.clear()
    store_docs(cat, [message(2)], [{"id": "t1"}])
    assert not [c for c in spy.calls if c.path.startswith(derived)]
    assert sorted(p for p in (tmp_path / "index").rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_ino for p in files} == inodes
    assert derived_json(cat.index_dir / "s000001.ids.json")["ids"] == ["m0001", "m0002"]


def test_a_writer_does_not_look_again_after_its_own_clean_mark(tmp_path, monkeypatch):
    """Its own writes are in memory already: the folder is scanned again only when
    another process marked it since."""
    cat = make_catalog(tmp_path)
    store_docs(cat, [message(1)])
    scans = fsspy.scandirs(monkeypatch)
    assert cat.names() == ["s000001"] and scans == []
    store_docs(make_catalog(tmp_path), [message(2)])  # another process
    scans.clear()
    assert cat.names() == ["s000001"] and scans == [str(cat.shard_dir)]
    assert cat.where("m0002") == "s000001"


def test_a_writer_marks_the_folder_dirty_from_its_first_write(tmp_path):
    cat = make_catalog(tmp_path)
    cat.will_write()
    assert mark(tmp_path).startswith(b'"dirty:')
    cat.flush()
    assert mark(tmp_path).startswith(b'"clean:')


def test_a_folder_not_made_yet_holds_no_shards(tmp_path):
    cat = make_catalog(tmp_path)
    cat.shard_dir.rmdir()
    assert cat.names() == [] and cat.where("m0001") is None


def test_the_latest_version_of_a_piece_of_work_is_found_across_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 1)
    cat = make_catalog(tmp_path, "deliverables")
    store_docs(cat, [deliverable(1, received_at="2026-03-09T10:00:00", version=3),
                     deliverable(2, received_at="2026-03-02T10:00:00", version=1),  # older, later shard
                     deliverable(3, work="banner"),
                     deliverable(4, received_at="2026-03-09T10:00:00", version=2)])  # same time, lower
    assert cat.names() == ["s000001", "s000002", "s000003", "s000004"]
    logo = cat.chain("email:maria@example.com|t1|logo")
    assert logo is not None and (logo["latest"], logo["version"]) == ("d0001", 3)
    banner = cat.chain("email:maria@example.com|t1|banner")
    assert banner is not None and banner["latest"] == "d0003"


def test_another_process_adding_to_a_shard_already_seen_is_seen(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "SHARD_DOCS", 3)
    reader, writer = make_catalog(tmp_path), make_catalog(tmp_path)
    store_docs(writer, [message(0), message(1)])
    assert reader.names() == ["s000001"] and reader.where("m0002") is None
    store_docs(writer, [message(2)])  # the same shard, rewritten
    assert reader.names() == ["s000001"] and reader.shards["s000001"]["count"] == 3
    assert reader.where("m0002") == "s000001"


def test_a_document_that_fills_the_shard_exactly_still_goes_to_it(tmp_path, monkeypatch):
    cat = make_catalog(tmp_path)
    store_docs(cat, [message(1)])
    doc = message(2)
    size = (cat.shard_dir / "s000001.json").stat().st_size
    monkeypatch.setattr(layout, "SHARD_BYTES", size + doc_size(doc))
    assert cat.place(doc) == "s000001"
    cat.forget_pending()
    monkeypatch.setattr(layout, "SHARD_BYTES", size + doc_size(doc) - 1)
    assert cat.place(doc) == "s000002"
    cat.forget_pending()
    # the bytes placed in the shard but not written yet count too, to the byte
    other = message(3, text="more")
    monkeypatch.setattr(layout, "SHARD_BYTES", size + doc_size(doc) + doc_size(other))
    assert (cat.place(doc), cat.place(other)) == ("s000001", "s000001")
    cat.forget_pending()
    monkeypatch.setattr(layout, "SHARD_BYTES", size + doc_size(doc) + doc_size(other) - 1)
    assert (cat.place(doc), cat.place(other)) == ("s000001", "s000002")


def test_placing_past_shard_999999_follows_the_numbers(tmp_path, monkeypatch):
    """New shards pending on both sides of s999999/s1000000: the open one is the
    higher number, not the later name."""
    monkeypatch.setattr(layout, "SHARD_DOCS", 2)
    cat = make_catalog(tmp_path)
    Shard(cat.shard_dir / "s999999.json").upsert_tables([("messages", [message(1)], "id")])
    cat.refresh()
    assert [cat.place(message(n)) for n in range(2, 6)] == [
        "s999999", "s1000000", "s1000000", "s1000001"]
    cat.forget_pending()
    assert store_docs(cat, [message(n) for n in range(2, 6)]) == {
        "s999999": ["m0002"], "s1000000": ["m0003", "m0004"], "s1000001": ["m0005"]}
    assert cat.names() == ["s999999", "s1000000", "s1000001"]  # by number, not by name
    assert cat.place(message(9)) == "s1000001"
