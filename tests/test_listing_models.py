"""The read models of the listings `messages --limit N` (agent.store.recent: the newest
messages of everybody and of each identity) and `deliverables --unreviewed --json`
(agent.reviewqueue.queue_json: the queue's documents as printed): what they answer
always equals what the shards give, after syncs, re-fetched messages, reviews, roster
changes and another process's writes; a missing, torn, damaged, stale or foreign model
is made again, never trusted; reads take no lock."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from agent.cli import cli
from agent.cli.output import json_bytes
from agent.errors import StoreError
from agent.files import read_derived, seal, unseal
from agent.models import Attachment, Identity, Message
from agent.reviewqueue import JSON_FILE, queue_json
from agent.store import Store, layout, readmodels, recent
from agent.store import workflow as wf
from agent.store.memory import MemoryStore
from tests.support import fsspy

OWNER = Identity("email", "owner@example.com", name="Owner")
OWNER_KEYS = frozenset({OWNER.key})
START = datetime(2026, 1, 1, tzinfo=UTC)
PEOPLE = 5


def page(first: int, count: int, *, subject: str = "Re: task", when_of: Any = None
         ) -> list[Any]:
    """Messages of five people; every fourth sent at the same second as the one before
    (ties across shards), every third with a file (a deliverable)."""
    out: list[Any] = []
    for n in range(first, first + count):
        c = n % PEOPLE
        who = Identity("email", f"c{c}@example.com", name=f"Contractor {c}")
        when = when_of(n) if when_of else START + timedelta(minutes=10 * (n - n % 4 // 3))
        atts = (Attachment(f"work-{n}.pdf", "application/pdf", data=b"x" * (40 + n)),) \
            if n % 3 == 0 else ()
        if n % 7 == 0:
            out.append(Message(f"<o{n}@example.com>", when, OWNER, subject=f"Task {n}",
                               text="Please", thread_remote_id=f"<t{c}@example.com>",
                               recipients=(who,), direction="out"))
            continue
        out.append(Message(f"<m{n}@example.com>", when, who, subject=f"{subject} {n}",
                           text=f"step {n}", thread_remote_id=f"<t{c}@example.com>",
                           attachments=atts))
    return out


def commit(store: Store, records: list[Any]) -> None:
    with store.writing():
        store.commit_page("mail", "maildir", records, owner_keys=OWNER_KEYS)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards of seven messages, six kept per group: every path is taken at test size."""
    monkeypatch.setattr(layout, "SHARD_DOCS", 7)
    monkeypatch.setattr(recent, "KEEP", 6)


def made(tmp_path: Path, count: int = 60) -> Store:
    store = Store(tmp_path / "data")
    with store.writing():
        for c in range(PEOPLE):
            store.add_contractor(f"Contractor {c}", [Identity("email", f"c{c}@example.com")])
    commit(store, page(0, count))
    return store


def truth(store: Store, limit: int, contractor: str | None = None) -> list[Any]:
    return list(islice(store.iter_messages_newest_first(contractor=contractor), limit))


def refs(store: Store) -> list[str | None]:
    return [None, *(f"c{c}@example.com" for c in range(PEOPLE))]


def assert_newest(store: Store) -> None:
    """Every limit the model keeps, for everybody and each contractor: the shards' answer
    (None, "cannot tell", only where a group's older messages were let go)."""
    for ref in refs(store):
        for limit in range(recent.KEEP + 2):
            got = store.newest_messages(limit, contractor=ref)
            if got is None:
                assert limit > 0
                continue
            assert got == truth(store, limit, ref), (ref, limit)
    assert store.newest_messages(recent.KEEP + 1) is None  # more than it keeps


def views(store: Store) -> Path:
    return readmodels.views_dir(store)


def shard_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the shards any Store opens from now on, in order."""
    reads: list[str] = []
    real = Store.read_shard

    def spy(self: Store, folder: str, name: str) -> Any:
        reads.append(name)
        return real(self, folder, name)

    monkeypatch.setattr(Store, "read_shard", spy)
    return reads


def test_the_newest_messages_equal_the_shards_through_syncs_and_refetches(
        tmp_path: Path, small: None) -> None:
    store = made(tmp_path)
    assert len(store.shard_names("messages")) > 5
    assert_newest(store)
    assert store.newest_messages(6) is not None and store.newest_messages(6, contractor="c1@example.com")
    commit(store, page(60, 9))  # a sync: the open shard and a new one
    assert_newest(store)
    # re-fetched, changed: messages rewritten in old shards, one dated to be the newest
    commit(store, page(3, 4, subject="Edited", when_of=lambda n: START + timedelta(days=30 + n)))
    assert_newest(store)
    assert store.newest_messages(3)[0]["subject"] == "Edited 6"
    # re-fetched, dated years back: the newest of each group leave what the model kept,
    # and it must not answer from what is left of it as if that were the newest
    commit(store, page(60, 9, subject="Old", when_of=lambda n: START - timedelta(days=900 + n)))
    commit(store, page(3, 4, subject="Old", when_of=lambda n: START - timedelta(days=800 + n)))
    assert_newest(store)
    assert store.newest_messages(1) == truth(store, 1)
    with store.writing():  # a roster change: the same messages, another contractor
        store.merge_contractors(store.find_contractor("c2@example.com")["id"],
                                store.find_contractor("c3@example.com")["id"])
    assert_newest(store)


def test_only_the_shards_written_since_are_read_again(tmp_path: Path, small: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = made(tmp_path)
    assert store.newest_messages(5) is not None  # made and saved
    expected = {ref: truth(store, 4, ref) for ref in refs(store)}
    saved = {p.name: p.stat().st_mtime_ns for p in views(store).rglob("*.json")}
    reads = shard_reads(monkeypatch)
    reader = Store(tmp_path / "data")
    for ref in refs(reader):
        assert reader.newest_messages(4, contractor=ref) == expected[ref]
    assert reads == []  # answered from the model: no shard opened, nothing written
    assert {p.name: p.stat().st_mtime_ns for p in views(store).rglob("*.json")} == saved
    commit(store, page(60, 3))  # into the open shard only
    open_shard = store.shard_names("messages")[-1]
    reads.clear()
    got = Store(tmp_path / "data").newest_messages(5)
    assert reads == [open_shard]
    assert got == truth(store, 5)


def test_a_missing_torn_damaged_or_foreign_model_is_made_again(tmp_path: Path,
                                                              small: None) -> None:
    store = made(tmp_path)
    expected = {ref: truth(store, 5, ref) for ref in refs(store)}

    def check() -> None:
        fresh = Store(tmp_path / "data")
        for ref in refs(fresh):
            assert fresh.newest_messages(5, contractor=ref) == expected[ref]

    check()
    main = recent.model_path(store.root)
    group = recent.group_path(store.root, "email:c1@example.com")
    every = recent.group_path(store.root, recent.ALL)
    for path in (main, group, every):
        good = path.read_bytes()
        saved = orjson.loads(read_derived(path) or b"null")
        damages: list[bytes] = [b"", good[: len(good) // 2], b"[1, 2]", b"null"]
        if path == main:
            shard = next(iter(saved["shards"]))
            damages += [orjson.dumps(dict(saved, version="recent-messages-0")),
                        orjson.dumps(dict(saved, format=99)),
                        orjson.dumps(dict(saved, shards={**saved["shards"], shard: {"x": 1}})),
                        orjson.dumps(dict(saved, groups={"*": {"token": 1}}))]
        else:
            entries = saved["entries"]
            damages += [orjson.dumps(dict(saved, token="forged")),
                        orjson.dumps(dict(saved, entries=[[*e[:3], "x"] for e in entries])),
                        orjson.dumps(dict(saved, entries=[[e[0], "s999999", *e[2:]]
                                                          for e in entries])),
                        orjson.dumps(dict(saved, group="email:other@example.com"))]
        for damage in damages:
            for written in (damage, seal(damage)):  # torn, and whole but wrong
                path.write_bytes(written)
                check()
                assert path.read_bytes() != written  # made again
        path.unlink()
        check()
        assert path.exists()
    # a model whose stamps say it saw shards that are now different: read again
    saved = orjson.loads(read_derived(main) or b"null")
    for line in saved["shards"].values():
        line["stamp"] = [0, 0, 0]
        line["last"] = "9999"
    main.write_bytes(seal(orjson.dumps(saved)))
    check()


def test_writes_of_another_process_are_seen(tmp_path: Path, small: None) -> None:
    writer = made(tmp_path)
    reader = Store(tmp_path / "data")
    assert reader.newest_messages(3) == truth(writer, 3)
    other = Store(tmp_path / "data")
    commit(other, page(100, 5, when_of=lambda n: START + timedelta(days=90, minutes=n)))
    got = reader.newest_messages(3)
    assert got == truth(Store(tmp_path / "data"), 3)
    assert got is not None and got[0]["remote_id"].startswith("<m104@")


def test_reads_take_no_lock_and_an_empty_or_memory_store_answers(tmp_path: Path,
                                                                small: None) -> None:
    store = made(tmp_path)
    holder = Store(tmp_path / "data")
    with holder.writing():  # another writer holds the lock: a reader does not wait for it
        assert Store(tmp_path / "data").newest_messages(4) == truth(store, 4)
    assert Store(tmp_path / "empty").newest_messages(3) == []
    memory = MemoryStore(tmp_path / "mem")
    with memory.writing():
        memory.commit_page("mail", "maildir", page(0, 10), owner_keys=OWNER_KEYS)
    assert memory.newest_messages(3) is None  # no files: listings iterate the shards
    with pytest.raises(StoreError, match="nobody"):
        store.newest_messages(3, contractor="nobody")


def test_a_read_only_data_folder_reads_the_shards(tmp_path: Path, small: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that cannot be saved is not made at every listing (every shard read):
    the listing reads the shards it needs. (Tests run as root here, whom permissions do
    not bind: the folder is read-only as ``os.access`` reports it.)"""
    store = made(tmp_path)
    expected = truth(store, 4, "c1@example.com")
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if mode == os.W_OK
                        else real(path, mode, **kw))
    reader = Store(tmp_path / "data", create=False)
    assert reader.newest_messages(4, contractor="c1@example.com") is None
    assert not recent.model_path(store.root).exists()
    monkeypatch.undo()
    assert reader.newest_messages(4, contractor="c1@example.com") == expected


def test_the_cli_prints_the_same_bytes_with_and_without_the_model(
        tmp_path: Path, small: None) -> None:
    store = made(tmp_path)
    config = tmp_path / "retainer.toml"
    config.write_text(f'[agent]\ndata_dir = "{store.root.parent}"\n'
                      'owner_emails = ["owner@example.com"]\n')
    runner = CliRunner()

    def run(*args: str) -> bytes:
        result = runner.invoke(cli, ["--config", str(config), *args],
                               env={"COLUMNS": "80", "RETAINER_LOAD_PLUGINS": ""})
        assert result.exit_code == 0, result.output
        return result.stdout_bytes

    for args in (["messages", "--limit", "4", "--json"], ["messages", "--limit", "5"],
                 ["messages", "--contractor", "c2@example.com", "--limit", "3", "--json"],
                 ["deliverables", "--unreviewed", "--json"],
                 ["deliverables", "--unreviewed", "--json", "--limit", "2"]):
        with_model = run(*args)
        for path in views(store).rglob("*"):
            if path.is_file():
                path.unlink()
        assert run(*args) == with_model  # made afresh, same bytes
        if "--json" in args and args[0] == "messages":
            docs = truth(store, int(args[args.index("--limit") + 1]),
                         args[args.index("--contractor") + 1] if "--contractor" in args
                         else None)
            assert orjson.loads(with_model) == docs


# -- the review queue as `deliverables --unreviewed --json` prints it ------------------------


def assert_queue(store: Store) -> None:
    docs = store.deliverables(unreviewed=True)
    assert queue_json(store, json_bytes) == json_bytes(docs)
    for limit in range(len(docs) + 2):
        assert queue_json(store, json_bytes, limit) == json_bytes(docs[:limit]), limit


def test_the_queue_json_follows_syncs_reviews_and_roster_changes(tmp_path: Path) -> None:
    store = made(tmp_path)
    assert_queue(store)
    assert (views(store) / JSON_FILE).exists()
    commit(store, page(60, 12))
    assert_queue(store)
    with store.writing():
        items = [(doc, {"status": "approved", "rating": 4, "cost": 10.0,
                        "when": START + timedelta(days=40)})
                 for doc in store.deliverables(unreviewed=True)[::3]]
        wf.record_reviews(store, items)
    assert_queue(store)
    with store.writing():
        store.merge_contractors(store.find_contractor("c0@example.com")["id"],
                                store.find_contractor("c3@example.com")["id"])
    assert_queue(store)
    with store.writing():
        items = [(doc, {"status": "approved", "rating": 4, "cost": 1.0,
                        "when": START + timedelta(days=41)})
                 for doc in store.deliverables(unreviewed=True)]
        wf.record_reviews(store, items)
    assert queue_json(store, json_bytes) == b"[]"


def test_a_torn_damaged_or_stale_queue_json_is_made_again(tmp_path: Path) -> None:
    store = made(tmp_path)
    expected = json_bytes(store.deliverables(unreviewed=True))
    assert queue_json(store, json_bytes) == expected
    path = views(store) / JSON_FILE
    good = path.read_bytes()
    head, _, body = good.partition(b"\n")
    header = orjson.loads(head)
    flipped = body.replace(b"work-", b"WORK-", 1)  # same length, other bytes
    damages = [b"", good[: len(good) - 10], good[: len(head)], b"{}\n" + body,
               head + b"\n" + flipped, head + b"\n" + body + b" ",
               orjson.dumps(dict(header, version="queue-json-0")) + b"\n" + body,
               orjson.dumps(dict(header, inputs=header["inputs"][:-1])) + b"\n" + body,
               b"not json\n" + body]
    for damage in damages:
        path.write_bytes(damage)
        assert queue_json(store, json_bytes) == expected
        assert path.read_bytes() != damage or damage == good
    os.utime(store.root / "roster.json", ns=(1, 1))  # an input changed: stale
    stale = path.read_bytes()
    assert queue_json(store, json_bytes) == expected
    assert path.read_bytes() != stale
    path.unlink()
    assert queue_json(store, json_bytes, 1) == json_bytes(store.deliverables(unreviewed=True)[:1])
    assert path.exists()


def test_the_queue_json_of_a_memory_store_is_not_kept(tmp_path: Path) -> None:
    memory = MemoryStore(tmp_path / "mem")
    with memory.writing():
        for c in range(PEOPLE):
            memory.add_contractor(f"Contractor {c}", [Identity("email", f"c{c}@example.com")])
        memory.commit_page("mail", "maildir", page(0, 12), owner_keys=OWNER_KEYS)
    docs = memory.deliverables(unreviewed=True)
    assert docs and queue_json(memory, json_bytes) == json_bytes(docs)
    assert queue_json(memory, json_bytes, 0) == b"[]"
    assert not (readmodels.views_dir(memory) / JSON_FILE).exists()


def test_a_model_wrong_in_one_field_is_made_again(tmp_path: Path, small: None) -> None:
    """Each damage is made from the files as they are (their current tokens), so that
    only the one field is wrong: the model is made again, never trusted."""
    store = made(tmp_path)
    expected = {ref: truth(store, 5, ref) for ref in refs(store)}
    main = recent.model_path(store.root)
    group = recent.group_path(store.root, "email:c1@example.com")

    def check() -> None:
        fresh = Store(tmp_path / "data")
        for ref in refs(fresh):
            assert fresh.newest_messages(5, contractor=ref) == expected[ref]

    def first_shard(saved: dict[str, Any], **line: Any) -> dict[str, Any]:
        name = next(iter(saved["shards"]))
        return dict(saved, shards={**saved["shards"], name: line})

    def every_group(saved: dict[str, Any], **change: Any) -> dict[str, Any]:
        return dict(saved, groups={g: dict(line, **change) for g, line in saved["groups"].items()})

    main_damages = [
        lambda s: dict(s, version="recent-messages-0"),
        lambda s: dict(s, format=99),
        lambda s: first_shard(s, **{k: v for k, v in next(iter(s["shards"].values())).items()
                                   if k != "last"}),
        lambda s: first_shard(s, **dict(next(iter(s["shards"].values())), last=5)),
        lambda s: every_group(s, floor=5),
        lambda s: every_group(s, token=5),
        lambda s: every_group(s, **{"in": ["s999999"]}),
        lambda s: dict(s, groups=[]),
        lambda s: dict(s, shards=[]),
    ]
    group_damages = [
        lambda s: dict(s, entries=[[e[0], "s999999", *e[2:]] for e in s["entries"]]),
        lambda s: dict(s, entries=[[*e[:3], "x"] for e in s["entries"]]),
        lambda s: dict(s, entries=[[e[0], e[1], "0", e[3]] for e in s["entries"]]),
        lambda s: dict(s, entries=[[5, *e[1:]] for e in s["entries"]]),
        lambda s: dict(s, entries=5),
    ]
    check()
    for path, damages in ((main, main_damages), (group, group_damages)):
        for damage in damages:
            forged = seal(orjson.dumps(damage(orjson.loads(read_derived(path) or b"null"))))
            path.write_bytes(forged)
            check()
            assert path.read_bytes() != forged  # made again


def test_a_group_file_of_an_earlier_save_is_not_trusted(tmp_path: Path, small: None) -> None:
    """Every save gives the group files a new token: a file left from an earlier save
    (a copied folder, a torn save) does not match the main file, and is made again."""
    store = made(tmp_path)
    assert store.newest_messages(3, contractor="c1@example.com") is not None
    group = recent.group_path(store.root, "email:c1@example.com")
    earlier = group.read_bytes()
    commit(store, page(61, 5, when_of=lambda n: START + timedelta(days=90, minutes=n)))
    expected = truth(store, 3, "c1@example.com")
    assert Store(tmp_path / "data").newest_messages(3, contractor="c1@example.com") == expected
    assert group.read_bytes() != earlier
    group.write_bytes(earlier)  # the file of the earlier save, back
    got = Store(tmp_path / "data").newest_messages(3, contractor="c1@example.com")
    assert got == expected and got[0]["remote_id"] == "<m61@example.com>"


def test_a_new_identity_and_a_message_that_changed_sender(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """An identity first seen in a sync is added from the shard written, no other shard
    read; a re-fetched message whose sender changed leaves the group it was in."""
    store = made(tmp_path)
    solo = Identity("email", "solo@example.com", name="Solo")
    with store.writing():
        store.add_contractor("Solo", [solo])
    assert store.newest_messages(5) is not None  # made and saved
    reads = shard_reads(monkeypatch)
    when = START + timedelta(days=90)
    first = Message("<solo@example.com>", when, solo, subject="Hello", text="hi",
                    thread_remote_id="<ts@example.com>")
    commit(store, [first])
    open_shard = store.shard_names("messages")[-1]
    reads.clear()
    reader = Store(tmp_path / "data")
    got = reader.newest_messages(3, contractor="solo@example.com")
    assert reads == [open_shard]
    assert got == truth(store, 3, "solo@example.com") and len(got) == 1
    assert reader.newest_messages(3) == truth(store, 3)
    # the same message fetched again, now from c1: Solo has none left
    commit(store, [Message("<solo@example.com>", when, Identity("email", "c1@example.com"),
                           subject="Hello", text="hi", thread_remote_id="<ts@example.com>")])
    reader = Store(tmp_path / "data")
    assert reader.newest_messages(3, contractor="solo@example.com") == [] \
        == truth(store, 3, "solo@example.com")
    assert reader.newest_messages(3, contractor="c1@example.com") \
        == truth(store, 3, "c1@example.com")


def test_the_newest_dated_back_still_answer_from_a_model_made_again(
        tmp_path: Path, small: None) -> None:
    """The newest messages re-fetched with dates years back leave the group of every
    message with fewer than it keeps: the model is made again and answers."""
    store = made(tmp_path)
    assert store.newest_messages(3) == truth(store, 3)
    commit(store, page(52, 8, subject="Old", when_of=lambda n: START - timedelta(days=900 + n)))
    got = Store(tmp_path / "data").newest_messages(3)
    assert got is not None and got == truth(store, 3)
    assert all(not doc["subject"].startswith("Old") for doc in got)
    assert_newest(store)
    # the model made again from shards not in date order (the old messages in the last
    # ones) must keep its floor; then the next newest are dated back too
    commit(store, page(38, 14, subject="Older",
                       when_of=lambda n: START - timedelta(days=1900 + n)))
    assert_newest(store)
    # a tie across shards near the top: ordered as the shards are
    commit(store, page(60, 5))
    assert_newest(store)


def test_a_listing_the_model_cannot_tell_does_not_make_it_again(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest six, the sixth sent at the same second as the seventh (let go): the
    model cannot tell, the shards are read by the listing, and the model, whole, is not
    made again at every such listing."""
    store = Store(tmp_path / "data")
    commit(store, page(0, 61, when_of=lambda n: START + timedelta(minutes=10 * (n // 2))))
    assert store.newest_messages(5) == truth(store, 5)
    reads = shard_reads(monkeypatch)
    assert Store(tmp_path / "data").newest_messages(recent.KEEP) is None
    assert reads == []


def test_files_beside_the_shards_are_not_shards(tmp_path: Path, small: None) -> None:
    """A backup or temp file named after a shard, in the messages folder, is not read
    as one (the catalog does not list it either)."""
    store = made(tmp_path)
    (store.root / "messages" / "s000999.json.bak").write_bytes(b"{}")
    (store.root / "messages" / "s000998.bak").write_bytes(b"{}")
    (store.root / "messages" / "s000001 copy.json").write_bytes(b"{}")  # a file manager's copy
    assert recent.shard_stamps(store.root).keys() == set(store.shard_names("messages"))
    assert Store(tmp_path / "data").newest_messages(4) == truth(store, 4)


def test_a_store_of_one_shard_is_answered_from_the_model(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every group's kept messages in the one shard there is: the model is still good,
    and the next listing opens no shard."""
    store = made(tmp_path, count=6)
    assert store.shard_names("messages") == ["s000001"]
    expected = {ref: truth(store, 3, ref) for ref in refs(store)}
    assert store.newest_messages(3) == expected[None]
    reads = shard_reads(monkeypatch)
    reader = Store(tmp_path / "data")
    for ref in refs(reader):
        assert reader.newest_messages(3, contractor=ref) == expected[ref]
    assert reads == []


def test_a_group_left_with_one_message_after_others_changed_sender(
        tmp_path: Path, small: None) -> None:
    """A contractor with more messages than the model keeps, then all but one of those it
    kept re-fetched from someone else: the one left and the older ones it had let go
    are the answer."""
    store = made(tmp_path)
    ref = "c1@example.com"
    assert store.newest_messages(3, contractor=ref) == truth(store, 3, ref)
    mine = truth(store, recent.KEEP, ref)
    assert len(mine) == recent.KEEP
    moved = [Message(doc["remote_id"], datetime.fromisoformat(doc["sent_at"]),
                     Identity("email", "c2@example.com"), subject=doc["subject"],
                     text="again", thread_remote_id="<t2@example.com>")
             for doc in mine[1:]]
    commit(store, moved)
    got = Store(tmp_path / "data").newest_messages(3, contractor=ref)
    assert got == truth(store, 3, ref)
    assert_newest(store)


def test_making_the_model_fsyncs_nothing(tmp_path: Path, small: None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The model is derived data, made by read commands: it is written without an fsync
    (a lost file is made again), so a listing never waits for the disk."""
    store = made(tmp_path)
    reader = Store(tmp_path / "data")
    spy = fsspy.install(monkeypatch)
    for listing in ("made", "brought up to date"):
        spy.calls.clear()
        assert reader.newest_messages(3) == truth(store, 3)
        assert reader.newest_messages(3, contractor="c1@example.com") \
            == truth(store, 3, "c1@example.com")
        assert [c.kind for c in spy.calls if c.kind != "replace"] == [], listing
        # made: new files, each renamed into place; then rewritten in place (no rename)
        assert {Path(c.dest).parent.name for c in spy.calls} == (
            {"views", "recent"} if listing == "made" else set()), listing
        commit(store, page(60, 3))  # a sync: the open shard written


def test_a_sync_of_other_peoples_messages_leaves_a_groups_file_as_it_was(
        tmp_path: Path, small: None) -> None:
    """The shard a sync wrote is read again, and with it every group that has messages
    in it; a group whose newest messages are still the same keeps its file (and token)."""
    store = made(tmp_path)
    assert store.newest_messages(3) is not None  # made and saved
    open_shard = store.shard_names("messages")[-1]
    group = recent.group_path(store.root, "email:c3@example.com")
    before = group.read_bytes()
    assert open_shard in {e[1] for e in orjson.loads(unseal(before) or b"null")["entries"]}
    commit(store, page(60, 1))  # into the open shard: a message of c0
    reader = Store(tmp_path / "data")
    assert reader.newest_messages(3) == truth(store, 3)
    assert reader.newest_messages(3, contractor="c0@example.com") \
        == truth(store, 3, "c0@example.com")
    assert group.read_bytes() == before
    assert reader.newest_messages(3, contractor="c3@example.com") \
        == truth(store, 3, "c3@example.com")


def test_a_writer_brings_a_saved_model_up_to_date_keeping_no_group(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a sync calls once its pages are committed (through the read models'
    refresh): nothing while no listing saved the model; then the shards written since
    are read, each group rewritten and let go, so the next listing opens no shard."""
    from agent.stats import refresh_read_models

    store = made(tmp_path)
    assert recent.refresh(store) is False
    assert not recent.model_path(store.root).exists()  # nobody listed: nothing made
    assert store.newest_messages(3) == truth(store, 3)
    assert recent.refresh(store) is False  # current
    commit(store, page(60, 9))
    assert recent.NAME in refresh_read_models(store)
    assert recent.refresh(store) is False
    expected = {ref: truth(store, 4, ref) for ref in refs(store)}
    reads = shard_reads(monkeypatch)
    reader = Store(tmp_path / "data")
    for ref in refs(reader):
        assert reader.newest_messages(4, contractor=ref) == expected[ref]
    assert reads == []
    commit(store, page(69, 9))
    model = recent.current(store, keep=["email:c1@example.com"])
    assert model is not None and set(model.entries) == {"email:c1@example.com"}
    assert_newest(Store(tmp_path / "data"))


def test_a_copied_data_folder_is_read_one_shard_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy (a backup put back, another machine) changes every shard's stamp: the
    model is brought up to date from every shard, keeping of each only the newest
    messages of each group (a model of 200,000 messages took 650 MB when all of them
    were held at once), and answers what the shards give."""
    import shutil
    import tracemalloc

    monkeypatch.setattr(layout, "SHARD_DOCS", 100)
    monkeypatch.setattr(recent, "KEEP", 6)
    store = made(tmp_path, 1200)
    assert len(store.shard_names("messages")) >= 10
    assert store.newest_messages(3) == truth(store, 3)  # the model, saved
    peaks = {}
    for how in ("made again", "brought up to date"):
        copy = tmp_path / how
        shutil.copytree(tmp_path / "data", copy)
        other = Store(copy)
        tracemalloc.start()
        model = recent.rebuild(other) if how == "made again" else recent.current(other)
        peaks[how] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert model is not None
        assert_newest(Store(copy))
    assert peaks["brought up to date"] < 1.5 * peaks["made again"], peaks


def after_the_next_scan(monkeypatch: pytest.MonkeyPatch, store: Store, action: Any
                        ) -> list[bool]:
    """The next scan of the shards (:func:`recent.shard_stamps`, the first thing a listing
    reads in the messages folder) answers with the folder as it is, then ``action`` (a
    writer, another reader) runs before the reader goes on. Returns a list emptied then."""
    real = os.scandir
    armed = [True]

    def scan(path: Any) -> Any:
        if not armed or Path(path) != store.root / "messages":
            return real(path)
        armed.clear()
        entries = list(real(path))
        for entry in entries:
            entry.stat()  # the stamps as they are now (a DirEntry keeps its stat)
        action()
        return iter(entries)

    monkeypatch.setattr(os, "scandir", scan)
    return armed


def test_a_group_file_another_reader_rewrote_meanwhile_is_read_again(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader loads the main file and scans the shards; before it reads the group's
    file, a sync and another reader bring the model up to date (new tokens): the first
    reader tries the model again and answers from it, without making it again from every
    shard."""
    store = made(tmp_path)
    assert store.newest_messages(3) is not None  # made and saved
    reads = shard_reads(monkeypatch)
    reader = Store(tmp_path / "data")

    def sync_and_another_reader() -> None:
        commit(store, page(64, 2, when_of=lambda n: START + timedelta(days=90, minutes=n)))
        assert Store(tmp_path / "data").newest_messages(3) == truth(store, 3)
        reads.clear()

    pending = after_the_next_scan(monkeypatch, store, sync_and_another_reader)
    got = reader.newest_messages(3)
    assert pending == []
    assert reads == []  # the model as the other reader saved it, not made again
    assert got == truth(store, 3) and got[0]["remote_id"] == "<m65@example.com>"


def test_a_shard_written_while_the_model_is_brought_up_to_date(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync writes a shard between the reader's scan and its read of that shard (reads
    take no lock): the model is made again from the files as they are then."""
    store = made(tmp_path)
    assert store.newest_messages(3) is not None  # made and saved
    commit(store, page(60, 2))  # the open shard written: the reader reads it again
    reader = Store(tmp_path / "data")
    pending = after_the_next_scan(monkeypatch, store, lambda: commit(
        store, page(64, 2, when_of=lambda n: START + timedelta(days=90, minutes=n))))
    got = reader.newest_messages(3)
    assert pending == []
    assert got == truth(store, 3) and got[0]["remote_id"] == "<m65@example.com>"
    assert_newest(store)


def test_a_tie_across_shards_is_ordered_by_the_shards_newest_message(
        tmp_path: Path, small: None) -> None:
    """Two messages sent at the same second, in the first and the second shard, after a
    message of the first shard was re-fetched as the newest of all: the first shard now
    comes first in the listing's order (newest message first, not shard number)."""
    store = Store(tmp_path / "data")
    commit(store, page(0, 9, when_of=lambda n: START + timedelta(minutes=n - (n == 7))))
    assert store.shard_names("messages")[:2] == ["s000001", "s000002"]
    assert store.newest_messages(3) == truth(store, 3)  # made and saved
    commit(store, page(1, 1, subject="Edited", when_of=lambda n: START + timedelta(days=30)))
    for reader in (Store(tmp_path / "data"), store):  # brought up to date, then made again
        for path in () if reader is not store else views(store).rglob("*.json"):
            path.unlink()
        got = reader.newest_messages(4)
        assert got == truth(store, 4)
        assert [doc["remote_id"] for doc in got] == [
            "<m1@example.com>", "<m8@example.com>", "<m6@example.com>", "<o7@example.com>"]


def test_an_identity_without_messages_hides_none_of_the_contractors_others(
        tmp_path: Path, small: None) -> None:
    """A contractor's identities are listed in order; one that sent nothing (so not in
    the model) coming first leaves the others' messages in the answer."""
    store = Store(tmp_path / "data")
    with store.writing():
        store.add_contractor("Contractor 1", [Identity("email", "a1@example.com"),
                                              Identity("email", "c1@example.com"),
                                              Identity("email", "z1@example.com")])
    commit(store, page(0, 30))
    commit(store, [Message("<z@example.com>", START - timedelta(days=1),
                           Identity("email", "z1@example.com"), subject="Old", text="z",
                           thread_remote_id="<tz@example.com>")])
    expected = truth(store, 4, "c1@example.com")
    assert len(expected) == 4
    assert store.newest_messages(4, contractor="a1@example.com") == expected
    assert Store(tmp_path / "data").newest_messages(4, contractor="c1@example.com") == expected
    assert Store(tmp_path / "data").newest_messages(6, contractor="z1@example.com") \
        == truth(store, 6, "c1@example.com")


def test_a_damaged_group_file_found_while_bringing_the_model_up_to_date(
        tmp_path: Path, small: None) -> None:
    """A sync wrote a shard, and a group it touches has a damaged file: the model is
    made again from every shard."""
    store = made(tmp_path)
    assert store.newest_messages(3) is not None  # made and saved
    commit(store, page(64, 2, when_of=lambda n: START + timedelta(days=90, minutes=n)))
    every = recent.group_path(store.root, recent.ALL)
    every.write_bytes(seal(b"[]"))
    got = Store(tmp_path / "data").newest_messages(3)
    assert got == truth(store, 3) and got[0]["remote_id"] == "<m65@example.com>"
    assert every.read_bytes() != seal(b"[]")  # made again


def test_a_read_only_data_folder_whose_model_is_left_short_reads_the_shards(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest messages re-fetched dated back leave a saved model short; in a folder
    it cannot write, the model is not made again: the listing reads the shards."""
    store = made(tmp_path)
    assert store.newest_messages(3) == truth(store, 3)  # made and saved
    commit(store, page(52, 8, subject="Old", when_of=lambda n: START - timedelta(days=900 + n)))
    read_only = [True]
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False
                        if mode == os.W_OK and read_only else real(path, mode, **kw))
    reader = Store(tmp_path / "data", create=False)
    assert reader.newest_messages(3) is None
    read_only.clear()
    assert reader.newest_messages(3) == truth(store, 3)


def test_the_model_is_made_in_a_writable_data_folder_under_a_read_only_root(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether the model can be saved is asked of its own folder (or the nearest that
    exists), not of ``/``, which a user other than root cannot write."""
    store = made(tmp_path)
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False
                        if mode == os.W_OK and Path(path) == Path("/")
                        else real(path, mode, **kw))
    for _ in ("made", "made again"):
        assert Store(tmp_path / "data").newest_messages(3) == truth(store, 3)
        assert recent.model_path(store.root).exists()
        recent.model_path(store.root).unlink()
    shutil_views = views(store)
    for path in sorted(shutil_views.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    assert Store(tmp_path / "data").newest_messages(3) == truth(store, 3)
    assert recent.model_path(store.root).exists()


def test_a_message_without_a_date_is_listed_last_as_the_shards_list_it(
        tmp_path: Path, small: None) -> None:
    """A message stored without ``sent_at`` (data of an older Retainer; plugins must
    give a date) is the oldest for the shards' listing, and for the model's."""
    store = made(tmp_path, count=4)
    undated = Message("<undated@example.com>", None,  # type: ignore[arg-type]
                      Identity("email", "c1@example.com"), subject="No date", text="x",
                      thread_remote_id="<t1@example.com>")
    commit(store, [undated])
    for ref in (None, "c1@example.com"):
        got = Store(tmp_path / "data").newest_messages(5, contractor=ref)
        assert got == truth(store, 5, ref)
        assert got is not None and got[-1]["remote_id"] == "<undated@example.com>"


def test_a_shard_rewritten_again_while_it_is_read_again(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message of an old shard re-fetched as the newest, and while a reader brings the
    model up to date another of that shard re-fetched newer still: the reader does not
    take the shard as read (and its messages as gone); the model is made again."""
    store = made(tmp_path)
    assert store.newest_messages(3) is not None  # made and saved
    commit(store, page(11, 1, subject="Edited", when_of=lambda n: START + timedelta(days=30)))
    reader = Store(tmp_path / "data")
    pending = after_the_next_scan(monkeypatch, store, lambda: commit(
        store, page(12, 1, subject="Edited", when_of=lambda n: START + timedelta(days=31))))
    got = reader.newest_messages(3)
    assert pending == []
    assert got == truth(store, 3)
    assert got is not None and [doc["remote_id"] for doc in got[:2]] == [
        "<m12@example.com>", "<m11@example.com>"]


def test_a_listing_from_a_current_model_scans_the_shards_once(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model up to date: a listing reads its files and scans the messages folder
    once (the stamps of the shards), nothing more."""
    store = made(tmp_path)
    assert store.newest_messages(3) is not None  # made and saved
    reader = Store(tmp_path / "data")
    scans = fsspy.scandirs(monkeypatch)
    got = {}
    for ref in (None, "c1@example.com"):
        scans.clear()
        got[ref] = reader.newest_messages(3, contractor=ref)
        assert scans == [str(store.root / "messages")], ref
    assert got == {ref: truth(store, 3, ref) for ref in got}


def test_undated_messages_let_go_while_brought_up_to_date_leave_the_group_unsure(
        tmp_path: Path, small: None) -> None:
    """A new person's undated messages, more than the model keeps, in shards it has not
    read: those let go while it reads them leave the group's floor at "" (only messages
    after it are all kept), not at None (every message kept: then which of the tied
    messages it kept would be taken as the newest)."""
    store = made(tmp_path)
    assert store.newest_messages(3) == truth(store, 3)  # the model, saved
    who = Identity("email", "c9@example.com")
    with store.writing():
        store.add_contractor("Contractor 9", [who])
    commit(store, [Message(f"<undated{n}@example.com>", None,  # type: ignore[arg-type]
                           who, subject="No date", text="x",
                           thread_remote_id="<t9@example.com>") for n in range(20)])
    assert recent.refresh(store)
    saved = orjson.loads(read_derived(recent.model_path(store.root)) or b"null")
    assert saved["groups"]["email:c9@example.com"]["floor"] == ""
    for limit in range(1, recent.KEEP + 1):
        got = Store(tmp_path / "data").newest_messages(limit, contractor="c9@example.com")
        assert got is None or got == truth(store, limit, "c9@example.com"), limit


def test_what_was_let_go_from_earlier_shards_still_bounds_the_group(
        tmp_path: Path, small: None) -> None:
    """Shards read one at a time while bringing the model up to date: a person's messages
    let go from the first shard (newer than anything after) still mark where the group's
    file stops being complete, so messages re-dated into the gap later do not hide the
    ones let go."""
    store = made(tmp_path)
    commit(store, page(60, 3))  # the open shard full: the next page fills new shards
    assert store.newest_messages(3) == truth(store, 3)  # the model, saved
    who = Identity("email", "c9@example.com")
    with store.writing():
        store.add_contractor("Contractor 9", [who])

    def mail(n: int, day: int) -> Message:
        return Message(f"<c9-{n}@example.com>", START + timedelta(days=day), who,
                       subject=f"Step {n}", text="x", thread_remote_id="<t9@example.com>")

    # a shard each: the newest seven, seven older, seven older still
    commit(store, [mail(n, 40 + n) for n in range(7)] + [mail(7 + n, 31 + n) for n in range(7)]
           + [mail(14 + n, 15 + n) for n in range(7)])
    assert recent.refresh(store)
    commit(store, [mail(n, 23 + n) for n in range(2, 7)])  # five of the newest, re-dated back
    for limit in range(1, recent.KEEP + 1):
        got = Store(tmp_path / "data").newest_messages(limit, contractor="c9@example.com")
        assert got is None or got == truth(store, limit, "c9@example.com"), limit


def test_bringing_the_model_up_to_date_holds_the_groups_asked_for_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message into the open shard touches the group of everyone with mail in it:
    each is read, rewritten and let go, so a sync's refresh keeps none in memory and a
    listing only its own, where holding them all costs every group's file."""
    import tracemalloc

    monkeypatch.setattr(layout, "SHARD_DOCS", 100)
    store = Store(tmp_path / "data")
    commit(store, [replace(m, text="word " * 400) for m in page(0, 1050)])  # 2 kB each
    assert store.newest_messages(3) == truth(store, 3)  # the model, saved
    peaks = {}
    for n, how in enumerate(("every group kept", "refresh", "listing")):
        commit(store, page(1050 + n, 1, when_of=lambda k: START - timedelta(days=k)))
        other = Store(tmp_path / "data")
        tracemalloc.start()
        if how == "refresh":
            assert recent.refresh(other)
        elif how == "listing":
            assert other.newest_messages(3) == truth(store, 3)
        else:
            assert recent.current(other) is not None
        peaks[how] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # measured: 0.76 and 0.83 of it (what stays is the shard read and one group's file)
    assert peaks["refresh"] < 0.85 * peaks["every group kept"], peaks
    assert peaks["listing"] < 0.9 * peaks["every group kept"], peaks


def test_a_refresh_finding_the_model_damaged_makes_it_again(tmp_path: Path, small: None
                                                             ) -> None:
    store = made(tmp_path)
    assert store.newest_messages(3) == truth(store, 3)  # the model, saved
    recent.model_path(store.root).write_bytes(b"{")
    assert recent.refresh(store) is True
    assert recent.refresh(store) is False  # made again, and current
    saved = orjson.loads(read_derived(recent.model_path(store.root)) or b"null")
    assert saved["version"] == recent.VERSION and saved["groups"]


@pytest.mark.parametrize("blocked", ["folder", "group file", "main file"])
def test_a_model_that_cannot_be_saved_still_answers_and_says_why(
        tmp_path: Path, small: None, blocked: str, caplog: pytest.LogCaptureFixture) -> None:
    """Something in the way of a model file (here a folder or a file where it goes): the
    listing answers from what it read, nothing half-saved is trusted later, and the
    debug log says which file and why."""
    import logging
    import shutil

    store = made(tmp_path)
    views = recent.group_path(store.root, recent.ALL).parent.parent
    if blocked == "folder":  # the model's folder cannot be made
        views.write_text("in the way")
    else:
        path = (recent.group_path(store.root, "email:c1@example.com") if blocked == "group file"
                else recent.model_path(store.root))
        path.mkdir(parents=True)
    with caplog.at_level(logging.DEBUG, logger="retainer.store"):
        for ref in refs(store):
            assert Store(tmp_path / "data").newest_messages(3, contractor=ref) \
                == truth(store, 3, ref)
    said = [r.getMessage() for r in caplog.records if "not saved" in r.getMessage()]
    assert said and all(m.startswith("read model recent-messages not saved: [Errno")
                        for m in said), said
    assert not recent.model_path(store.root).is_file()  # no main file naming half the groups
    if blocked == "folder":
        views.unlink()
    else:
        shutil.rmtree(path)
    assert_newest(Store(tmp_path / "data"))  # made in full once nothing is in the way
