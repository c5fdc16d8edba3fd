"""The upgrade from one shard per month (schema 1) to bounded shards (agent/store/migrate.py).

Month files are written here as Retainer with schema 1 wrote them (TinyDB JSON), so each
case can hold what a real old store may: a message re-fetched under another month, thread
entries in the month files, messages without a thread, a killed earlier upgrade.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.files import TMP_PREFIX
from agent.store import Store, layout, migrate
from agent.store.migrate import _thread_entries
from tests.support import fsspy


def tinydb(**tables: list[dict[str, Any]]) -> bytes:
    return json.dumps({t: {str(i + 1): d for i, d in enumerate(docs)}
                       for t, docs in tables.items()}).encode()


def message(n: int, month: str, thread: str | None = "t1", **extra: Any) -> dict[str, Any]:
    return {"id": f"m{n:03d}", "source": "inbox", "platform": "imap", "remote_id": f"<{n}@x>",
            "thread_id": thread, "thread_remote_id": f"<{thread}@x>", "subject": f"s{n}",
            "identity": "email:maria@example.com", "contractor_id": None, "direction": "in",
            "sent_at": f"{month}-{10 + n % 10:02d}T09:00:00+00:00", "attachments": [],
            **extra}


def deliverable(n: int, month: str) -> dict[str, Any]:
    return {"id": f"d{n:03d}", "source": "inbox", "identity": "email:maria@example.com",
            "received_at": f"{month}-{10 + n % 10:02d}T09:00:00+00:00",
            "review_status": "approved" if n % 2 else "unreviewed", "filename": f"f{n}.png"}


def old_store(data: Path, months: dict[str, dict[str, list[dict[str, Any]]]],
              deliverables: dict[str, list[dict[str, Any]]] | None = None,
              *, version: int = 1) -> Path:
    """A data folder as schema 1 left it: ``{month: {table: docs}}`` per month file."""
    root = data / "store"
    for folder in ("messages", "deliverables", "index/messages", "index/deliverables"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for month, tables in months.items():
        (root / "messages" / f"{month}.json").write_bytes(tinydb(**tables))
    for month, docs in (deliverables or {}).items():
        (root / "deliverables" / f"{month}.json").write_bytes(tinydb(deliverables=docs))
    (root / "meta.json").write_bytes(tinydb(
        meta=[{"name": "schema", "version": version}],
        sources=[{"source": "inbox", "cursor": "uid:9"}]))
    return root


def shard_tables(root: Path, folder: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    return {p.stem: {t: list(docs.values()) for t, docs in json.loads(p.read_bytes()).items()}
            for p in sorted((root / folder).glob("s*.json"))}


def test_month_files_become_bounded_shards_each_document_once(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "SHARD_DOCS", 3)
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 2)
    may, june, july = "2024-05", "2024-06", "2024-07"
    months = {
        may: {"messages": [message(1, may), message(2, may, thread=None), message(3, may)],
              "threads": [{"id": "t1", "subject": "from the month file", "identity": None}]},
        june: {"messages": [message(4, june, thread="t2", identity=None),
                            message(1, june),  # re-fetched under a later month
                            message(5, june, thread="t2"), message(6, june)]},
        july: {"messages": [message(7, july)], "threads": []},
    }
    old_store(tmp_path, months, {may: [deliverable(1, may), deliverable(2, may)],
                                 june: [deliverable(3, june), deliverable(1, june)]})
    store = Store(tmp_path)
    root = store.root
    assert sorted(p.name for p in (root / "messages").iterdir()) == [
        "s000001.json", "s000002.json", "s000003.json"]
    shards = shard_tables(root, "messages")
    assert {name: [d["id"] for d in t["messages"]] for name, t in shards.items()} == {
        "s000001": ["m001", "m002", "m003"], "s000002": ["m004", "m005", "m006"],
        "s000003": ["m007"]}
    assert shards["s000001"]["messages"][0]["sent_at"].startswith(may)  # the first copy kept
    # one thread entry per thread and shard, spanning the shard's messages; the month
    # file's entry is the base when it has one; an identity comes from the messages
    assert shards["s000001"]["threads"] == [{
        "id": "t1", "subject": "from the month file", "identity": "email:maria@example.com",
        "first_at": "2024-05-11T09:00:00+00:00", "last_at": "2024-05-13T09:00:00+00:00"}]
    assert sorted(shards["s000002"]["threads"], key=lambda t: t["id"]) == [
        {"id": "t1", "source": "inbox", "platform": "imap", "remote_id": "<t1@x>",
         "subject": "s6", "identity": "email:maria@example.com",
         "first_at": "2024-06-16T09:00:00+00:00", "last_at": "2024-06-16T09:00:00+00:00"},
        {"id": "t2", "source": "inbox", "platform": "imap", "remote_id": "<t2@x>",
         "subject": "s4", "identity": "email:maria@example.com",
         "first_at": "2024-06-14T09:00:00+00:00", "last_at": "2024-06-15T09:00:00+00:00"}]
    assert {name: [d["id"] for d in t["deliverables"]]
            for name, t in shard_tables(root, "deliverables").items()} == {
        "s000001": ["d001", "d002"], "s000002": ["d003"]}
    assert json.loads((root / "meta.json").read_bytes())["meta"]["1"] == {
        "name": "schema", "version": 3}  # 2 at the months' commit, then the records step
    assert store.source_state("inbox")["cursor"] == "uid:9"  # carried as it was
    assert [m["id"] for m in Store(tmp_path).messages()] == [
        "m007", "m006", "m005", "m004", "m003", "m002", "m001"]
    assert len(Store(tmp_path).deliverables(unreviewed=True)) == 1
    assert all(name.startswith("s") for name in os.listdir(root / "index" / "messages"))


def test_shards_roll_by_bytes_during_the_upgrade(tmp_path, monkeypatch):
    may = "2024-05"
    docs = [message(n, may, text="x" * 500) for n in range(5)]
    monkeypatch.setattr(migrate, "SHARD_BYTES", layout.doc_size(docs[0]) * 2)
    old_store(tmp_path, {may: {"messages": docs}})
    root = Store(tmp_path).root
    assert [[d["id"] for d in t["messages"]] for t in shard_tables(root, "messages").values()] \
        == [["m000", "m001"], ["m002", "m003"], ["m004"]]


def test_a_killed_upgrade_is_started_again_from_the_month_files(tmp_path):
    may = "2024-05"
    root = old_store(tmp_path, {may: {"messages": [message(1, may), message(2, may)]}})
    (root / "messages" / "s000007.json").write_bytes(tinydb(messages=[message(9, may)]))
    (root / "deliverables" / "s000001.json").write_bytes(tinydb(deliverables=[]))
    (root / "index" / "messages" / "s000007.json").write_bytes(b"{}")
    (root / "messages" / f"{TMP_PREFIX}x").write_bytes(b"half a shard")
    (root / "messages" / "notes.json").write_bytes(b"{}")  # neither a month nor a shard
    store = Store(tmp_path)
    assert sorted(os.listdir(root / "messages")) == ["notes.json", "s000001.json"]
    assert os.listdir(root / "deliverables") == []
    assert not (root / "index" / "messages" / "s000007.json").exists()
    assert [m["id"] for m in store.messages()] == ["m002", "m001"]


def test_a_committed_upgrade_only_removes_the_month_files(tmp_path, monkeypatch):
    """Killed after meta.json said schema 2: the new shards are the truth, kept as they are."""
    may = "2024-05"
    root = old_store(tmp_path, {may: {"messages": [message(1, may)]}},
                     {may: [deliverable(1, may)]}, version=2)
    shard = tinydb(messages=[message(5, may)])
    (root / "messages" / "s000001.json").write_bytes(shard)
    spy = fsspy.install(monkeypatch)
    store = Store(tmp_path)
    assert os.listdir(root / "messages") == ["s000001.json"]
    assert os.listdir(root / "deliverables") == []
    assert (root / "messages" / "s000001.json").read_bytes() == shard
    assert [m["id"] for m in store.messages()] == ["m005"]
    assert {str((root / f).resolve()) for f in ("messages", "deliverables")} <= set(
        spy.dir_fsyncs())  # the deletions made durable


def test_the_upgrade_writes_shards_durably_before_its_commit(tmp_path, monkeypatch):
    may = "2024-05"
    root = old_store(tmp_path, {may: {"messages": [message(1, may)]}},
                     {may: [deliverable(1, may)]})
    spy = fsspy.install(monkeypatch)
    Store(tmp_path)
    calls = spy.calls
    commit = next(i for i, c in enumerate(calls)
                  if c.kind == "replace" and c.dest.endswith("/meta.json"))
    shard_writes = [i for i, c in enumerate(calls) if c.kind == "replace"
                    and "/s000001.json" in c.dest and "/index/" not in c.dest]
    assert len(shard_writes) == 2 and max(shard_writes) < commit
    folders = {str((root / f).resolve()) for f in ("messages", "deliverables")}
    synced_before = {c.path for c in calls[:commit] if c.kind == "fsync_dir"}
    assert folders <= synced_before


def test_nothing_to_upgrade_leaves_the_store_alone(tmp_path):
    store = Store(tmp_path)
    before = sorted(str(p) for p in store.root.rglob("*"))
    migrate.upgrade(store)
    assert sorted(str(p) for p in store.root.rglob("*")) == before


@pytest.mark.parametrize("first_identity", [None, "email:sam@example.com"])
def test_thread_entries_span_their_messages(first_identity):
    docs = [message(3, "2024-05", identity=first_identity), message(1, "2024-05"),
            message(2, "2024-05", thread=None), message(4, "2024-05", thread="t2", sent_at=None)]
    entries = {e["id"]: e for e in _thread_entries(docs, {})}
    assert set(entries) == {"t1", "t2"}
    assert (entries["t1"]["first_at"], entries["t1"]["last_at"]) == (
        "2024-05-11T09:00:00+00:00", "2024-05-13T09:00:00+00:00")
    # the first message's identity, else the first one a later message has
    assert entries["t1"]["identity"] == (first_identity or "email:maria@example.com")
    assert entries["t1"]["subject"] == "s3" and entries["t1"]["remote_id"] == "<t1@x>"
    assert (entries["t2"]["first_at"], entries["t2"]["last_at"]) == ("", "")
    base = {"t1": {"id": "t1", "subject": "kept", "identity": "email:ana@example.com"}}
    assert _thread_entries(docs[:2], base) == [{
        "id": "t1", "subject": "kept", "identity": "email:ana@example.com",
        "first_at": "2024-05-11T09:00:00+00:00", "last_at": "2024-05-13T09:00:00+00:00"}]


def test_messages_that_shared_an_id_are_told_apart_with_their_files_and_reviews(tmp_path):
    """Schema 1 named mail by its Message-ID alone: another message under an id already
    copied gets its own ids (message, file, the link between them), its review kept; the
    same message re-fetched (another date, the same sender, subject, text and files) is
    kept once."""
    from agent.store.ids import deliverable_id_for, message_id_for, short_hash

    may, june, july = "2024-05", "2024-06", "2024-07"

    def mail(month: str, subject: str, sender: str, day: int = 12) -> dict[str, Any]:
        return message(1, month, sender={"address": sender}, subject=subject,
                       sent_at=f"{month}-{day:02d}T09:00:00+00:00",
                       attachments=[{"filename": f"{subject}.png", "sha256": subject, "size": 3,
                                     "deliverable_id": "d001"}])

    def file(month: str, review: str, day: int = 12) -> dict[str, Any]:
        return {"id": "d001", "source": "inbox", "message_id": "m001", "remote_id": "<1@x>#2",
                "identity": "email:maria@example.com", "review_status": review,
                "received_at": f"{month}-{day:02d}T09:00:00+00:00", "filename": "f.png"}

    first, other = mail(may, "logo", "maria@example.com"), mail(june, "invoice", "Sam@Example.com")
    third = dict(mail(july, "banner", "sam@example.com", day=3), attachments=[])
    old_store(tmp_path, {may: {"messages": [first]},
                         june: {"messages": [other, mail(june, "invoice", "Sam@Example.com")]},
                         july: {"messages": [third, dict(first, sent_at=f"{july}-01T09:00:00+00:00")]}},
              {may: [file(may, "approved")], june: [file(june, "changes_requested")]})
    store = Store(tmp_path)
    base = f"<1@x>~r{short_hash(f'{june}-12T09:00:00+00:00', 'sam@example.com')[:12]}"
    banner = f"<1@x>~r{short_hash(f'{july}-03T09:00:00+00:00', 'sam@example.com')[:12]}"
    remotes = {m["subject"]: m["remote_id"] for m in store.messages()}
    assert remotes == {"logo": "<1@x>", "invoice": base, "banner": banner}
    ids = {m["subject"]: m["id"] for m in store.messages()}
    assert ids == {"logo": "m001", "invoice": message_id_for("inbox", base),
                   "banner": message_id_for("inbox", banner)}
    files = {d["review_status"]: d for d in store.deliverables()}
    assert set(files) == {"approved", "changes_requested"}
    moved = files["changes_requested"]
    assert (moved["id"], moved["remote_id"], moved["message_id"]) == (
        deliverable_id_for("inbox", f"{base}#2"), f"{base}#2", ids["invoice"])
    assert (files["approved"]["id"], files["approved"]["message_id"]) == ("d001", "m001")
    links = {m["subject"]: [a["deliverable_id"] for a in m["attachments"]]
             for m in store.messages()}
    assert links == {"logo": ["d001"], "invoice": [moved["id"]], "banner": []}


def test_the_upgrade_says_how_many_documents_it_moved(tmp_path, caplog):
    import logging

    may = "2024-05"
    old_store(tmp_path, {may: {"messages": [message(1, may), message(2, may)]}},
              {may: [deliverable(1, may)]})
    with caplog.at_level(logging.INFO, logger="retainer.store"):
        Store(tmp_path)
    assert [r.getMessage().partition(" in ")[0] for r in caplog.records
            if r.getMessage().startswith("store upgraded")] == [
        "store upgraded to bounded shards: 3 documents"]


def _file(name: str, digest: str, size: int) -> dict[str, Any]:
    return {"filename": name, "sha256": digest, "size": size}


@pytest.mark.parametrize(("change", "same"), [
    ({}, True),  # only the date differs: re-fetched
    ({"attachments": [_file("b.pdf", "h2", 4), _file("a.png", "h1", 3)]}, True),  # file order
    ({"sender": {"address": "sam@example.com"}}, False),
    ({"subject": "another subject"}, False),
    ({"text": "another text"}, False),
    ({"attachments": [_file("a.png", "h1", 3)]}, False),  # a file fewer
    ({"attachments": [_file("c.png", "h1", 3), _file("b.pdf", "h2", 4)]}, False),  # a name
    ({"attachments": [_file("a.png", "hX", 3), _file("b.pdf", "h2", 4)]}, False),  # a hash
    ({"attachments": [_file("a.png", "h1", 5), _file("b.pdf", "h2", 4)]}, False),  # a size
])
def test_a_copy_under_the_same_id_is_the_same_message_only_if_all_it_keeps_agrees(
        tmp_path, change, same):
    """Sender, subject, text and each file's name, hash and size tell a re-fetched copy
    (kept once) from another message that had the same id (kept under its own id)."""
    may, june = "2024-05", "2024-06"
    first = message(1, may, sender={"address": "maria@example.com"}, text="hello",
                    attachments=[_file("a.png", "h1", 3), _file("b.pdf", "h2", 4)])
    again = dict(first, sent_at=f"{june}-02T09:00:00+00:00", **change)
    old_store(tmp_path, {may: {"messages": [first]}, june: {"messages": [again]}})
    stored = sorted(Store(tmp_path).messages(), key=lambda m: m["sent_at"])
    if same:
        assert [(m["id"], m["sent_at"]) for m in stored] == [("m001", first["sent_at"])]
    else:
        assert stored[0]["id"] == "m001" and len(stored) == 2
        assert stored[1]["id"] != "m001" and stored[1]["remote_id"].startswith("<1@x>~r")
        assert {k: stored[1][k] for k in change} == change


def test_copies_without_sender_text_or_files_are_the_same_message(tmp_path):
    may, june = "2024-05", "2024-06"
    first = message(1, may, sender=None, attachments=None)
    old_store(tmp_path, {may: {"messages": [first]},
                         june: {"messages": [dict(first, sent_at=f"{june}-02T09:00:00+00:00")]}})
    assert [m["id"] for m in Store(tmp_path).messages()] == ["m001"]


def test_the_commit_says_schema_2_before_a_month_file_is_removed(tmp_path, monkeypatch):
    """A kill after the first month file is gone must find the commit: meta.json says
    schema 2 in its schema record (else the next open would copy what is left, and lose
    the rest)."""
    may, june = "2024-05", "2024-06"
    root = old_store(tmp_path, {may: {"messages": [message(1, may)]},
                                june: {"messages": [message(2, june)]}},
                     {may: [deliverable(1, may)]})
    spy = fsspy.install(monkeypatch, unlinks=True)
    Store(tmp_path)
    month = next(i for i, c in enumerate(spy.calls)
                 if c.kind == "unlink" and layout.MONTH_RE.match(Path(c.path).stem))
    meta = [json.loads(c.content or b"") for c in spy.calls[:month]
            if c.kind == "replace" and c.dest == str((root / "meta.json").resolve())]
    assert meta and list(meta[-1]["meta"].values()) == [{"name": "schema", "version": 2}]
    assert meta[-1]["sources"] == {"1": {"source": "inbox", "cursor": "uid:9"}}


def test_every_message_of_a_month_file_is_checked_for_a_shared_id(tmp_path):
    """A month file holding a new message and a re-fetched copy before one that shared
    an id: each is looked at, whatever comes before it in the file."""
    may, june = "2024-05", "2024-06"
    logo = message(1, may, subject="logo", sender={"address": "maria@example.com"})
    invoice = message(1, june, subject="invoice", sender={"address": "sam@example.com"})
    old_store(tmp_path, {may: {"messages": [logo]},
                         june: {"messages": [message(2, june),
                                             dict(logo, sent_at=f"{june}-01T09:00:00+00:00"),
                                             invoice]}})
    stored = {m["subject"]: m for m in Store(tmp_path).messages()}
    assert set(stored) == {"logo", "s2", "invoice"}
    assert (stored["logo"]["id"], stored["logo"]["sent_at"]) == ("m001", logo["sent_at"])
    assert stored["invoice"]["remote_id"].startswith("<1@x>~r")


def test_a_repaired_id_never_takes_the_id_of_a_message_already_there(tmp_path):
    from agent.store.ids import message_id_for

    may, june = "2024-05", "2024-06"
    invoice = message(1, june, subject="invoice", sender={"address": "sam@example.com"})
    base = migrate.repaired_remote_id("<1@x>", invoice["sent_at"], "sam@example.com")
    there = message(2, may, subject="there", remote_id=base, id=message_id_for("inbox", base))
    old_store(tmp_path, {may: {"messages": [message(1, may, subject="logo"), there]},
                         june: {"messages": [invoice]}})
    stored = {m["subject"]: m for m in Store(tmp_path).messages()}
    assert set(stored) == {"logo", "there", "invoice"}
    assert stored["there"]["id"] == message_id_for("inbox", base)
    assert stored["invoice"]["remote_id"] == f"{base}-2"
    assert stored["invoice"]["id"] == message_id_for("inbox", f"{base}-2")


@pytest.mark.parametrize("missing", ["sent_at", "sender"])
def test_a_repaired_id_without_date_or_sender_is_the_one_a_later_read_computes(
        tmp_path, missing):
    """A later read computes the repaired id from the message's date and sender, ``""``
    when it has none (``PageStaging._stored_remote_id``): the upgrade must agree."""
    may, june = "2024-05", "2024-06"
    other = dict(message(1, june, subject="other", sender={"address": "sam@example.com"}),
                 **{missing: "" if missing == "sent_at" else None})  # as the store keeps them
    old_store(tmp_path, {may: {"messages": [message(1, may)]}, june: {"messages": [other]}})
    sent = "" if missing == "sent_at" else other["sent_at"]
    sender = "" if missing == "sender" else "sam@example.com"
    stored = {m["subject"]: m for m in Store(tmp_path).messages()}
    assert stored["other"]["remote_id"] == migrate.repaired_remote_id("<1@x>", sent, sender)


def test_the_file_of_a_dateless_message_with_a_hash_in_its_id_follows_its_repair(tmp_path):
    """A Message-ID may hold ``#`` (the file's part number comes after the last one), and
    mail without a date keeps ``""`` as its date and its file's: the file still moves
    with the message that got its own id."""
    from agent.store.ids import deliverable_id_for

    may, june = "2024-05", "2024-06"
    remote = "<a#b@x>"
    first = message(1, may, remote_id=remote, subject="first")
    other = dict(message(1, june, remote_id=remote, subject="other",
                         attachments=[{"filename": "f.png", "sha256": "h", "size": 1,
                                       "deliverable_id": "d001"},
                                      {"filename": "g.png", "deliverable_id": "d999"}]),
                 sent_at="")  # d999: a file never stored, left as it was
    file = {"id": "d001", "source": "inbox", "message_id": "m001", "remote_id": f"{remote}#3",
            "identity": "email:maria@example.com", "review_status": "approved",
            "received_at": "", "filename": "f.png"}
    old_store(tmp_path, {may: {"messages": [first]}, june: {"messages": [other]}},
              {june: [file]})
    store = Store(tmp_path)
    moved = {m["subject"]: m for m in store.messages()}["other"]
    new_remote = migrate.repaired_remote_id(remote, "", "")
    assert moved["remote_id"] == new_remote
    [stored] = store.deliverables()
    assert (stored["id"], stored["remote_id"], stored["message_id"]) == (
        deliverable_id_for("inbox", f"{new_remote}#3"), f"{new_remote}#3", moved["id"])
    assert moved["attachments"] == [
        {"filename": "f.png", "sha256": "h", "size": 1, "deliverable_id": stored["id"]},
        {"filename": "g.png", "deliverable_id": "d999"}]
