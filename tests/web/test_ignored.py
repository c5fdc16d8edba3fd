"""Ignored candidates are kept in the store (the roster), under its write lock: the
dashboard, the CLI and a re-sync all see the same; an older dashboard's
``DATA/web/ignored.json`` is moved into the store when the store is opened."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.errors import StoreError
from agent.models import Identity, Message
from agent.store import Store
from agent.store.memory import MemoryStore
from agent.web.cache import StoreAccess
from tests.support.workflow_mail import OWNER, run, synced

NEWS = "email:news@shop.example"


def _write_from(store: Store, *senders: str) -> None:
    now = datetime.now(UTC)
    with store.writing():
        store.commit_page("mail", "maildir", [
            Message(f"<{n}-{s}>", now - timedelta(hours=n), Identity("email", s, name=s),
                    subject="hello", text="hi") for n, s in enumerate(senders)],
            owner_keys=frozenset({f"email:{OWNER}"}))


@pytest.mark.parametrize("kind", [Store, MemoryStore])
def test_ignoring_hides_a_candidate_until_shown_again_or_promoted(
        tmp_path: Path, kind: type[Store]) -> None:
    store = kind(tmp_path)
    _write_from(store, "a@x.example", "b@x.example")
    with store.writing():
        changed = store.ignore_candidates(["EMAIL:a@x.example "])
    assert [d["key"] for d in changed] == ["email:a@x.example"]
    assert [d["key"] for d in store.candidates()] == ["email:b@x.example"]
    assert [d["key"] for d in store.candidates(ignored=True)] == ["email:a@x.example"]
    assert len(store.candidates(ignored=None)) == 2
    assert store.counts()["candidates"] == 1
    _write_from(store, "a@x.example")  # they write again: still ignored
    assert [d["key"] for d in store.candidates(ignored=True)] == ["email:a@x.example"]
    with store.writing():
        assert store.ignore_candidates(["email:a@x.example"]) == []  # already: no write
        store.ignore_candidates(["email:a@x.example"], ignored=False)
    assert len(store.candidates()) == 2
    with store.writing():
        store.ignore_candidates(["email:a@x.example", "email:b@x.example"])
        store.add_contractor("A", [Identity("email", "a@x.example")])  # promoted
        store.demote("A")  # and back: a candidate again, not an ignored one
    assert [d["key"] for d in store.candidates()] == ["email:a@x.example"]


def test_only_candidates_can_be_ignored_and_nothing_is_written_otherwise(
        tmp_path: Path) -> None:
    store = Store(tmp_path)
    _write_from(store, "a@x.example")
    with store.writing():
        store.add_contractor("Cy", [Identity("email", "cy@x.example")])
    before = (tmp_path / "store" / "roster.json").read_bytes()
    for keys in (["email:a@x.example", "email:nobody@x.example"], ["email:cy@x.example"]):
        with store.writing(), pytest.raises(StoreError, match="is not a candidate"):
            store.ignore_candidates(keys)
    assert (tmp_path / "store" / "roster.json").read_bytes() == before
    assert Store(tmp_path).candidates(ignored=True) == []


def test_an_older_dashboard_s_file_is_moved_into_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path)
    _write_from(store, "a@x.example", "b@x.example")
    with store.writing():
        store.add_contractor("Cy", [Identity("email", "cy@x.example")])
    web = tmp_path / "web"
    web.mkdir(mode=0o700)
    old = web / "ignored.json"
    keys = ["email:a@x.example", "email:cy@x.example", "email:gone@x.example"]
    old.write_text(json.dumps(keys))
    reopened = Store(tmp_path)  # opening moves it (under the write lock)
    assert not old.exists()
    assert [d["key"] for d in reopened.candidates(ignored=True)] == ["email:a@x.example"]
    assert reopened.find_contractor("cy@x.example")["name"] == "Cy"  # a contractor stays one
    roster = (tmp_path / "store" / "roster.json").read_bytes()
    old.write_text(json.dumps(keys))  # killed before the file was removed: done again
    Store(tmp_path)
    assert not old.exists() and (tmp_path / "store" / "roster.json").read_bytes() == roster
    old.write_text("{not json")  # a damaged file hides nobody and is not read twice
    assert [d["key"] for d in Store(tmp_path).candidates(ignored=True)] == ["email:a@x.example"]
    assert not old.exists()


def test_the_cli_and_the_dashboard_agree(tmp_path: Path) -> None:
    config = synced(tmp_path)  # the newsletter sender is a candidate
    data = tmp_path / "data"
    assert NEWS in run(config, "contractors", "candidates").output
    access = StoreAccess(data, threading.RLock())
    with access.writing() as store:  # what the dashboard's "Ignore" button does
        store.ignore_candidates([NEWS])
    assert NEWS not in run(config, "contractors", "candidates").output
    shown = json.loads(run(config, "contractors", "candidates", "--ignored", "--json").output)
    assert [d["key"] for d in shown] == [NEWS]
    assert access.model().counts()["candidates"] == 0
