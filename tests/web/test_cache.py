"""The dashboard's memos: stale after any write to the store, kept only where a write of the
dashboard's own patched them."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.models import Identity
from agent.store import Store
from agent.web.cache import StoreAccess


def test_memos_follow_the_store(tmp_path: Path) -> None:
    access = StoreAccess(tmp_path, threading.RLock())
    with access.writing() as store:
        store.add_contractor("Ann", [Identity("email", "ann@example.com")])
    calls: list[str] = []

    def names() -> list[str]:
        calls.append("names")
        return [c["name"] for c in access.store.contractors()]

    assert access.memo("names", names) == ["Ann"]
    assert access.memo("names", names) == ["Ann"] and calls == ["names"]  # memoized
    other = Store(tmp_path)  # another process (the CLI, the daemon) writes
    with other.writing():
        other.add_contractor("Bob", [Identity("email", "bob@example.com")])
    assert access.memo("names", names) == ["Ann", "Bob"] and len(calls) == 2
    access.memo("other", lambda: "x")
    with access.writing() as store:  # the dashboard writes and patches one memo
        store.add_contractor("Cy", [Identity("email", "cy@example.com")])
        access.patched("names")  # (claims it did not change: kept as it was)
    assert access.memo("names", names) == ["Ann", "Bob"] and len(calls) == 2
    assert access.entries(access.fingerprint()) == [("names", ["Ann", "Bob"])]  # other dropped


def test_prefix_patches_and_warming(tmp_path: Path) -> None:
    access = StoreAccess(tmp_path, threading.RLock())
    access.quiet = 0.0
    warmed = threading.Event()
    access.set_warmer(lambda store: warmed.set())
    with access.writing() as store:
        store.add_contractor("Zed", [Identity("email", "zed@example.com")])
    access.memo("queue:1", lambda: 1)
    access.memo("queue:2", lambda: 2)
    access.memo("report:1", lambda: 3)
    with access.writing() as store:
        store.add_contractor("Ann", [Identity("email", "ann@example.com")])
        access.patched("queue:")
    assert sorted(k for k, _ in access.entries(access.fingerprint())) == ["queue:1", "queue:2"]
    assert warmed.wait(5)
