"""The contract kit's fixtures, also where the ``pytest11`` entry point is not installed yet."""

from __future__ import annotations

from agent import testing as kit

plugin_host = kit.plugin_host
memory_store = kit.memory_store
