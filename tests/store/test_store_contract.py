"""The store contract (contract.py) run against the store on disk and the one in memory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.models import Identity, Message
from agent.store import Store
from agent.store.memory import MemoryStore
from tests.store.contract import StoreContract, StoreFactory


@pytest.fixture(params=[Store, MemoryStore], ids=["disk", "memory"])
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    factory: StoreFactory = request.param
    return factory


class TestStoreContract(StoreContract):
    pass


def test_the_memory_store_writes_no_store_files(tmp_path: Path) -> None:
    """Everything the contract reads comes from memory: no shard, summary or cache file."""
    store = MemoryStore(tmp_path / "data")
    contract = StoreContract()
    with store.writing():
        store.add_contractor("Maria", [Identity("email", "maria@example.com")])
    contract.commit(store, [Message("a", datetime(2026, 3, 2, tzinfo=UTC),
                                    Identity("email", "maria@example.com"), text="hi")])
    assert store.thread_activity() and store.counts()["messages"] == 1
    written = [p for p in (tmp_path / "data" / "store").rglob("*") if p.is_file()]
    assert written == []
