"""Shared fixtures. Server fixtures live in tests/servers/ and load as pytest plugins."""

from __future__ import annotations

pytest_plugins = ["tests.servers.dovecot"]
