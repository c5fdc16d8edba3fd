"""A shard checks its file against its copy in memory once per batched section (a page),
and at every access outside one; a file another process replaced is always reloaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent.models import Identity, Message
from agent.store import Store
from agent.store import storage as storage_module
from agent.store.storage import Shard, batched_dir_sync

OWNER = Identity("email", "owner@example.com")
ANA = Identity("email", "ana@example.com")


def _count_stats(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[int]:
    """How many times the operating system is asked for ``path``'s metadata."""
    calls = [0]
    real = os.stat

    def stat(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if Path(target) == path:
            calls[0] += 1
        return real(target, *args, **kwargs)

    monkeypatch.setattr(storage_module.os, "stat", stat)
    return calls


def _page(first: int, count: int) -> list[Message]:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 3, 1, tzinfo=UTC)
    return [Message(f"<m{i}@example.com>", start + timedelta(minutes=i), ANA, subject="hi",
                    text="x", thread_remote_id=f"<t{i % 7}@example.com>", recipients=(OWNER,))
            for i in range(first, first + count)]


def test_a_page_checks_its_open_shard_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    store = Store(tmp_path / "data")
    with store.writing():
        store.commit_page("mail", "maildir", _page(0, 20),
                          owner_keys=frozenset({OWNER.key}))
    path = store.root / "messages" / "s000001.json"
    calls = _count_stats(monkeypatch, path)
    with store.writing():
        result = store.commit_page("mail", "maildir", _page(20, 50),
                                   owner_keys=frozenset({OWNER.key}))
    assert result.messages_new == 50
    # once when first used in the page, once for the stamp of the file it wrote, once for
    # the summary's stamp: not once per message and thread as before
    assert 1 <= calls[0] <= 4
    assert len(store.catalog("messages").shard_ids("s000001")) == 70


def test_outside_a_section_every_access_checks(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.json"
    shard = Shard(path)
    shard.upsert_many("messages", [{"id": "a"}])
    calls = _count_stats(monkeypatch, path)
    for _ in range(5):
        shard.get("messages", "a")
    assert calls[0] >= 5


def test_a_file_replaced_between_sections_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    mine, theirs = Shard(path), Shard(path)
    with batched_dir_sync():
        mine.upsert_many("messages", [{"id": "a", "v": 1}])
        assert mine.get("messages", "a") == {"id": "a", "v": 1}
    theirs.upsert_many("messages", [{"id": "a", "v": 2}, {"id": "b", "v": 1}])  # another process
    with batched_dir_sync():
        assert mine.get("messages", "a") == {"id": "a", "v": 2}
        assert mine.get("messages", "b") == {"id": "b", "v": 1}
    assert storage_module._section == 0


def test_sections_do_not_leak_after_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    mine, theirs = Shard(path), Shard(path)
    mine.upsert_many("messages", [{"id": "a", "v": 1}])
    with pytest.raises(RuntimeError), batched_dir_sync():
        assert mine.get("messages", "a") == {"id": "a", "v": 1}
        raise RuntimeError("page failed")
    assert storage_module._section == 0
    theirs.upsert_many("messages", [{"id": "a", "v": 3}])
    assert mine.get("messages", "a") == {"id": "a", "v": 3}


def test_another_thread_checks_every_access_during_a_section(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "t.json"
    reader, writer = Shard(path), Shard(path)
    writer.upsert_many("messages", [{"id": "a", "v": 1}])
    assert reader.get("messages", "a") == {"id": "a", "v": 1}
    seen: list[Any] = []
    with batched_dir_sync():  # this thread's section (a page being committed)
        def read() -> None:
            seen.append(reader.get("messages", "a"))
            writer.upsert_many("messages", [{"id": "a", "v": 2}])  # replaced meanwhile
            seen.append(reader.get("messages", "a"))

        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
    assert seen == [{"id": "a", "v": 1}, {"id": "a", "v": 2}]
