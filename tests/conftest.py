"""Shared fixtures. Server fixtures live in tests/servers/ and load as pytest plugins."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.servers.dovecot", "tests.servers.oauth"]

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With RETAINER_NO_SKIPS=1 (CI), a skipped test fails the run: every test is required."""
    if os.environ.get("RETAINER_NO_SKIPS") == "1" and _skipped:
        print(f"\n{len(_skipped)} test(s) were skipped, and every test is required in CI:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = 1
