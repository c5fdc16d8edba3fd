from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.errors import StoreError
from agent.models import Attachment, Contract, Identity, Message, Submission
from agent.store import Store

OWNER = frozenset({"email:owner@example.com"})
WHEN = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)


def msg(remote_id: str, sender: str = "maria@example.com", **kw) -> Message:
    return Message(remote_id=remote_id, sent_at=kw.pop("sent_at", WHEN),
                   sender=Identity("email", sender, name=kw.pop("name", "Maria")),
                   recipients=(Identity("email", "owner@example.com"),), **kw)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data")
    with s.writing():
        s.add_contractor("Maria Lopez", [Identity("email", "maria@example.com")], skills=["logo"])
    return s


def commit(store: Store, records, source="inbox"):
    with store.writing():
        return store.commit_page(source, "imap", records, owner_keys=OWNER)


def test_upsert_is_idempotent(store):
    first = commit(store, [msg("<a@x>"), msg("<b@x>")])
    again = commit(store, [msg("<a@x>"), msg("<b@x>")])
    assert (first.messages_new, again.messages_new, again.messages_updated) == (2, 0, 0)
    assert len(store.messages()) == 2


def test_unknown_sender_is_candidate_not_contractor(store):
    commit(store, [msg("<n@x>", sender="news@shop.example", name="Shop")])
    assert [c["name"] for c in store.contractors()] == ["Maria Lopez"]
    assert [c["key"] for c in store.candidates()] == ["email:news@shop.example"]
    assert store.messages()[0]["contractor_id"] is None


def test_outgoing_mail_is_attributed_to_recipient(store):
    out = Message(remote_id="<o@x>", sent_at=WHEN, sender=Identity("email", "owner@example.com"),
                  recipients=(Identity("email", "maria@example.com"),), subject="brief")
    commit(store, [out])
    doc = store.messages()[0]
    assert doc["direction"] == "out"
    assert doc["contractor_id"] == store.find_contractor("Maria Lopez")["id"]


def test_attachments_from_contractors_become_deliverables(store):
    data = b"%PDF-1.4 logo"
    commit(store, [msg("<d@x>", subject="logo v1", attachments=(
        Attachment("../../etc/logo.pdf", "application/pdf", data=data, remote_id="2"),
        Attachment("sig.png", "image/png", data=b"png", inline=True, remote_id="3"),
    ))])
    (d,) = store.deliverables(unreviewed=True)
    assert d["filename"] == "logo.pdf" and d["review_status"] == "unreviewed"
    assert d["size"] == len(data)
    path = os.path.realpath(d["path"])
    assert path.startswith(os.path.realpath(store.files_dir))
    assert Path(path).read_bytes() == data
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_candidate_attachments_are_not_deliverables(store):
    commit(store, [msg("<s@x>", sender="spam@x.example", attachments=(
        Attachment("offer.pdf", data=b"x", remote_id="1"),))])
    assert store.deliverables() == []


def test_same_file_twice_is_stored_once(store):
    att = Attachment("a.png", data=b"same bytes", remote_id="1")
    commit(store, [msg("<1@x>", attachments=(att,)), msg("<2@x>", attachments=(att,))])
    docs = store.deliverables()
    assert len(docs) == 2 and docs[0]["path"] == docs[1]["path"]


def test_review_survives_refetch(store):
    att = Attachment("a.png", data=b"bytes", remote_id="1")
    commit(store, [msg("<1@x>", attachments=(att,))])
    (d,) = store.deliverables()
    with store.writing():
        store.update_deliverable(d["id"], review_status="approved", review={"rating": 5})
    commit(store, [msg("<1@x>", attachments=(att,))])
    (again,) = store.deliverables()
    assert again["review_status"] == "approved" and again["review"] == {"rating": 5}


def test_oversize_attachment_is_flagged(store):
    commit(store, [msg("<big@x>", attachments=(
        Attachment("huge.zip", size=2 * 1024**3, status="too_large", remote_id="1"),))])
    (d,) = store.deliverables()
    assert d["flagged"] and d["path"] is None and d["size"] == 2 * 1024**3


def test_submissions_and_contracts_hire_the_contractor(store):
    who = Identity("upwork", "~01abc", name="Ravi K.")
    commit(store, [
        Contract("c1", who, title="Landing page", kind="fixed", budget=500.0, currency="USD"),
        Submission("s1", WHEN, who, Attachment("page.zip", status="delivery_waiting",
                                               url="https://example.invalid/d")),
    ], source="upwork")
    ravi = store.find_contractor("upwork:~01abc")
    assert ravi["name"] == "Ravi K." and ravi["status"] == "trial"
    (d,) = store.deliverables()
    assert d["contractor_id"] == ravi["id"] and d["status"] == "delivery_waiting"
    assert store.contracts()[0]["budget"] == 500.0


def test_merge_moves_history(store):
    commit(store, [msg("<m1@x>", sender="maria.l@gmail.example", name="Maria L")])
    with store.writing():
        store.add_contractor("Maria (gmail)", [Identity("email", "maria.l@gmail.example")])
        store.merge_contractors("Maria Lopez", "Maria (gmail)")
    maria = store.find_contractor("maria.l@gmail.example")
    assert maria["name"] == "Maria Lopez"
    assert len(store.messages(contractor="Maria Lopez")) == 1
    assert len(store.contractors()) == 1


def test_automatic_merge_by_profile_email(store):
    commit(store, [Submission("s", WHEN, Identity("fiverr", "maria@example.com", name="maria_art"),
                              Attachment("x.png", status="delivery_waiting"))], source="fv")
    assert len(store.contractors()) == 1
    assert len(store.deliverables(contractor="Maria Lopez")) == 1


def test_demote_turns_contractor_into_candidate(store):
    with store.writing():
        store.demote("Maria Lopez")
    assert store.contractors() == []
    assert [c["key"] for c in store.candidates()] == ["email:maria@example.com"]


def test_files_are_private_and_json(store, tmp_path):
    commit(store, [msg("<p@x>")])
    for path in (tmp_path / "data").rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        elif path.suffix == ".json":
            assert mode == 0o600, path
            json.loads(path.read_bytes())


def test_corrupt_file_is_refused_not_replaced(tmp_path):
    s = Store(tmp_path / "d")
    (s.root / "roster.json").write_text('{"contractors": {}}trailing')
    with pytest.raises(StoreError, match="not valid JSON"):
        s.contractors()
    assert (s.root / "roster.json").read_text().endswith("trailing")


def test_two_store_objects_see_each_others_writes(tmp_path):
    a, b = Store(tmp_path / "d"), Store(tmp_path / "d")
    with a.writing():
        a.add_contractor("A", [Identity("email", "a@x.example")])
    assert [c["name"] for c in b.contractors()] == ["A"]
    with b.writing():
        b.add_contractor("B", [Identity("email", "b@x.example")])
    with a.writing():
        a.add_contractor("C", [Identity("email", "c@x.example")])
    assert sorted(c["name"] for c in Store(tmp_path / "d").contractors()) == ["A", "B", "C"]


def test_find_contractor_errors_are_helpful(store):
    with pytest.raises(StoreError, match="retainer contractors"):
        store.find_contractor("nobody")


def test_orphan_temp_files_are_removed(tmp_path):
    from tests.test_files import kill_during_write

    s = Store(tmp_path / "d")
    with s.writing():
        s.add_contractor("A", [Identity("email", "a@x.example")])
    kill_during_write(s.root / "roster.json")  # a real orphan, named by write_private
    kill_during_write(s.root / "messages" / "2026-01.json")
    (s.tmp_dir / "download.part").write_text("partial")
    assert len(list(s.root.rglob(".tmp-*"))) == 2
    fresh = Store(tmp_path / "d")
    with fresh.writing():
        pass
    assert list(s.root.rglob(".tmp-*")) == [] and not (s.tmp_dir / "download.part").exists()
    assert [c["name"] for c in fresh.contractors()] == ["A"]


def _add_many(data_dir: str, prefix: str, count: int) -> None:
    store = Store(Path(data_dir))
    for i in range(count):
        with store.writing():
            store.add_contractor(f"{prefix}{i}", [Identity("email", f"{prefix}{i}@x.example")])


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    """The daemon and CLI commands write through the file lock: no write is lost."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(str(tmp_path / "d"), p, 25)) for p in "abc"]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    names = {c["name"] for c in Store(tmp_path / "d").contractors()}
    assert names == {f"{p}{i}" for p in "abc" for i in range(25)}
