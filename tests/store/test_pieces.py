"""The store's small pieces on their own: document shapes, versions, kept files, roster rules."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from agent.errors import NoSpace, StoreError
from agent.models import Attachment, ThreadRecord
from agent.store.blobs import Blobs, blob_suffix
from agent.store.documents import handled_before, merge_thread_entries, month_of, widen_thread
from agent.store.roster import MERGE_HOPS, Roster
from agent.store.storage import Shard
from agent.store.versions import version_label, work_stem


@pytest.mark.parametrize(("name", "stem"), [
    ("Logo-v2 final.png", "logo"), ("logo (2).png", "logo"), ("report_rev3.pdf", "report"),
    ("a-b final-final.png", "a-b"), ("Brief v 3.docx", "brief"), ("menu-r2.pdf", "menu"),
    ("2024.pdf", "2024"), ("draft.png", "draft"), ("v2.png", "v2"), ("dir\\Logo.PNG", "logo"),
    ("logo_copy_12.png", "logo"), ("logo-123.png", "logo-123"),
    ("_logo v2.png", "logo"), ("-menu-.pdf", "menu"),  # separators at the ends go too
])
def test_work_stem_drops_version_marks_only(name: str, stem: str) -> None:
    assert work_stem(name) == stem


def test_version_label() -> None:
    assert version_label({"version": 2, "work": "logo", "filename": "Logo-v2.png"}) == "v2 of logo"
    assert version_label({"version": 3, "work": "", "filename": "x.png"}) == "v3 of x.png"
    assert version_label({"version": 1, "work": "logo"}) == ""
    assert version_label({"work": "logo"}) == ""


def _queued(received: str | None, status: str = "unreviewed") -> dict[str, object]:
    return {"received_at": received, "review_status": status, "review": None}


def test_handled_before_the_cut_off_only() -> None:
    early = _queued("2026-03-01T23:59:59Z")
    handled_before(early, "2026-03-02")  # type: ignore[arg-type]
    assert early["review_status"] == "approved"
    assert early["review"] == {"status": "approved", "rating": None, "feedback": "",
                               "reviewed_at": None, "cost": None, "hours": None, "sent": [],
                               "round": 0, "auto": "received before review_since 2026-03-02"}
    for doc, cutoff in [(_queued("2026-03-02T00:00:00Z"), "2026-03-02"),  # that day counts
                        (_queued("2026-03-01T10:00:00Z"), ""),  # no cut-off
                        (_queued(None), "2026-03-02"),  # no date: stays in the queue
                        (_queued("2026-03-01T10:00:00Z", "changes_requested"), "2026-03-02")]:
        before = dict(doc)
        handled_before(doc, cutoff)  # type: ignore[arg-type]
        assert doc == before


def test_month_of() -> None:
    assert month_of("2026-03-02T09:00:00Z") == "2026-03"
    assert month_of("") == "0000-00"


def _thread(first: str, last: str, identity: str | None) -> ThreadRecord:
    return {"id": "t_1", "source": "s", "platform": "imap", "remote_id": "r", "subject": "x",
            "identity": identity, "first_at": first, "last_at": last}


def test_thread_entries_widen_and_merge() -> None:
    entry = _thread("2026-03-02", "2026-03-02", None)
    widen_thread(entry, "2026-03-01", None)
    widen_thread(entry, "2026-03-05", "email:a@x")
    widen_thread(entry, "2026-03-03", "email:b@x")
    assert (entry["first_at"], entry["last_at"], entry["identity"]) == \
        ("2026-03-01", "2026-03-05", "email:a@x")
    stored = _thread("2026-02-01", "2026-03-04", None)
    merged = merge_thread_entries(stored, entry)
    assert (merged["first_at"], merged["last_at"], merged["identity"]) == \
        ("2026-02-01", "2026-03-05", "email:a@x")
    assert stored["identity"] is None  # a new entry, the stored one untouched
    kept = merge_thread_entries(_thread("2026-03-02", "2026-03-09", "email:c@x"), entry)
    assert (kept["first_at"], kept["last_at"], kept["identity"]) == \
        ("2026-03-01", "2026-03-09", "email:c@x")


@pytest.mark.parametrize(("name", "suffix"), [
    ("a.PNG", ".png"), ("a.tar.gz", ".gz"), ("noext", ""), ("a.abcdefghi", ".abcdefghi"),
    ("a.abcdefghij", ""), ("a.p-g", ""), ("a.", ""), (".hidden", ""), ("a.x", ".x"),
])
def test_blob_suffix(name: str, suffix: str) -> None:
    assert blob_suffix(name) == suffix


def _blobs(tmp_path: Path) -> Blobs:
    for sub in ("files", "tmp"):
        (tmp_path / sub).mkdir()
    return Blobs(tmp_path, tmp_path / "files", tmp_path / "tmp")


def test_blobs_are_content_addressed_and_synced_once(tmp_path: Path) -> None:
    blobs = _blobs(tmp_path)
    sha, path, size = blobs.put(Attachment("Logo.PNG", data=b"same"), "Logo.PNG")
    assert (Path(path).name, size) == (f"{sha}.png", 4)
    assert not Path(path).exists()  # written to tmp/; fsynced and renamed by sync()
    blobs.sync()
    assert os.stat(path).st_mode & 0o777 == 0o600 and Path(path).read_bytes() == b"same"
    assert not blobs.unsynced
    source = tmp_path / "download.bin"
    source.write_bytes(b"same")
    again = blobs.put(Attachment("other.png", path=source), "other.png")
    assert again == (sha, path, 4) and not blobs.unsynced  # found, not written again
    assert source.read_bytes() == b"same"  # the original is never moved
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (3 << 20))
    _, path2, size2 = blobs.put(Attachment("big.bin", path=big), "big.bin")
    blobs.sync()
    assert size2 == 3 << 20 and Path(path2).read_bytes() == big.read_bytes()
    assert os.stat(path2).st_mode & 0o777 == 0o600 and not blobs.unsynced
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(StoreError, match="marked stored but has no data"):
        blobs.put(Attachment("empty.png"), "empty.png")


@pytest.mark.parametrize(("code", "kind", "text"), [
    (errno.ENOSPC, NoSpace, "no space left in"), (errno.EIO, StoreError, "could not store"),
])
def test_a_failed_blob_write_leaves_no_half_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 code: int, kind: type[Exception], text: str
                                                 ) -> None:
    blobs = _blobs(tmp_path)

    def failing(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(kind, match=text) as err:
        blobs.put(Attachment("a.png", data=b"bytes"), "a.png")
        blobs.sync()  # the rename comes with the page's other files
    assert err.value.__cause__ is None
    assert list((tmp_path / "tmp").iterdir()) == list((tmp_path / "files").iterdir()) == []
    assert not blobs.unsynced


def _roster(chain: int) -> Roster:
    contractors = [{"id": f"c{i}", "name": f"C{i}", "merged_into": f"c{i + 1}", "identities": []}
                   for i in range(chain)]
    contractors.append({"id": f"c{chain}", "name": "Last", "merged_into": None, "identities": []})
    return Roster([{"key": "email:a@x", "contractor_id": "c0"},
                   {"key": "email:b@x", "contractor_id": None}], contractors)


def test_roster_follows_merges_a_bounded_number_of_hops() -> None:
    assert _roster(3).contractor_of("email:a@x") == "c3"
    assert _roster(MERGE_HOPS).contractor_of("email:a@x") == f"c{MERGE_HOPS}"
    assert _roster(MERGE_HOPS + 1).contractor_of("email:a@x") == f"c{MERGE_HOPS}"
    roster = _roster(1)
    assert roster.contractor_of("email:b@x") is None and roster.contractor_of(None) is None
    assert roster.contractor_of("email:nobody@x") is None
    assert roster.identities_of("c1") == {"email:a@x"}
    linked = roster.link("c1", "email:b@x")
    assert linked["identities"] == ["email:b@x"] and roster.contractors["c1"] is linked
    assert roster.link("c1", "email:b@x") is linked  # already there: unchanged


def test_roster_find_names_several_matches() -> None:
    roster = Roster([], [{"id": "c_abc1", "name": "Ann", "merged_into": None},
                         {"id": "c_abc2", "name": "ann", "merged_into": None},
                         {"id": "c_xyz", "name": "Bo", "merged_into": None}])
    with pytest.raises(StoreError, match=r'"ann" matches several contractors: Ann \(c_abc1\), '
                                         r'ann \(c_abc2\); use the id'):
        roster.find("ann")
    with pytest.raises(StoreError, match="matches several contractors"):
        roster.find("abc")
    assert roster.find("xy")["name"] == "Bo" == roster.find("c_xyz")["name"]


def test_document_numbers_continue_from_what_the_file_holds(tmp_path: Path) -> None:
    shard = Shard(tmp_path / "s.json")
    assert shard.upsert_many("t", [{"id": "a"}, {"id": "b"}, {"id": "c"}]) == (3, 0)
    shard.remove("t", ["b"])
    assert shard.upsert_many("t", [{"id": "d"}]) == (1, 0)
    assert Shard(tmp_path / "s.json").key_map("t") == {"a": 1, "c": 3, "d": 4}
    assert shard.docs("empty") == [] and shard.get("empty", "a") is None


def test_commit_result_is_still_importable_from_the_store_core() -> None:
    """``agent.store.core`` names ``CommitResult`` in ``__all__`` (plugins and older code
    import it from there); it is loaded from the page staging only when asked for."""
    from agent.store import core
    from agent.store.core import CommitResult
    from agent.store.pages import CommitResult as staged

    assert CommitResult is staged
    with pytest.raises(AttributeError) as err:
        core.NoSuchName  # noqa: B018
    assert str(err.value) == "module 'agent.store.core' has no attribute 'NoSuchName'"
