"""The store the store's tests share: on disk and in memory alike, Maria on the roster."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.store import Store
from agent.store.memory import MemoryStore
from tests.store.contract import MARIA, StoreFactory


@pytest.fixture(params=[Store, MemoryStore], ids=["disk", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    factory: StoreFactory = request.param
    store = factory(tmp_path / "data")
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
    return store
