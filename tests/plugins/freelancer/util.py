"""Helpers for the Freelancer.com plugin tests: a connector, a config and a CLI runner
aimed at a :mod:`plugins.freelancer.sandbox` server."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from pydantic import SecretStr

import plugins.freelancer
from agent.cli import App, cli
from agent.config import load_config
from agent.connector import SourceContext
from agent.models import Contract, Cursor, Message, Record, Submission
from agent.plugins import PluginHost, make_plugin_host
from agent.store import Store
from agent.sync import SyncEngine, SyncResult
from plugins.freelancer.connector import FreelancerConnector
from plugins.freelancer.sandbox import Sandbox
from plugins.freelancer.settings import FreelancerSettings

FAST = 100.0  # requests per second for tests that are not about the rate limit
TOKEN_ENV = "RETAINER_TEST_FREELANCER_TOKEN"


def settings(sandbox: Sandbox, **overrides: Any) -> FreelancerSettings:
    values: dict[str, Any] = {"token": SecretStr(sandbox.token), "base_url": sandbox.base_url,
                              "rate_per_second": FAST, "timeout": 5.0, "max_retries": 2}
    values.update(overrides)
    return FreelancerSettings(**values)


def connector(sandbox: Sandbox, tmp_path: Path, *, cap: int = 50 * 1024 * 1024,
              wants: Callable[[Any], bool] | None = None,
              **overrides: Any) -> FreelancerConnector:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    context = SourceContext(source="fl", platform="freelancer", state_dir=tmp_path,
                            scratch_dir=scratch, max_attachment_bytes=cap,
                            log=logging.getLogger("retainer.plugins.freelancer"))
    if wants is not None:
        context.wants_attachments = wants
    return FreelancerConnector(settings(sandbox, **overrides), context)


class Run:
    """Everything one ``fetch`` yielded: records, the last cursor, the request count."""

    def __init__(self, records: list[Record], cursor: Cursor, requests: int,
                 pages: int, files: dict[tuple[str, str], tuple[bytes, int]]) -> None:
        self.files = files  # (message id, filename) -> (bytes, mode) as the host saw them
        self.records = records
        self.cursor = cursor
        self.requests = requests
        self.pages = pages

    @property
    def messages(self) -> list[Message]:
        return [r for r in self.records if isinstance(r, Message)]

    @property
    def contracts(self) -> list[Contract]:
        return [r for r in self.records if isinstance(r, Contract)]

    @property
    def submissions(self) -> list[Submission]:
        return [r for r in self.records if isinstance(r, Submission)]


def fetch_all(sandbox: Sandbox, tmp_path: Path, cursor: Cursor | None = None,
              **options: Any) -> Run:
    """Run one sync like the engine does: keep each page's cursor once it is 'stored'."""
    conn = connector(sandbox, tmp_path, **options)
    current: Cursor = dict(cursor or {})
    records: list[Record] = []
    files: dict[tuple[str, str], tuple[bytes, int]] = {}
    pages = 0
    try:
        for page in conn.fetch(current):
            records.extend(page.records)
            for record in page.records:  # the files only live until the next page
                for att in getattr(record, "attachments", ()):
                    if att.path is not None:
                        files[(record.remote_id, att.filename)] = (
                            att.path.read_bytes(), att.path.stat().st_mode & 0o777)
            pages += 1
            if page.cursor is not None:
                current = page.cursor
    finally:
        conn.close()
    return Run(records, current, conn.requests_made, pages, files)


def expected_messages(sandbox: Sandbox) -> set[str]:
    return {str(mid) for mid in sandbox.messages}


# -- through the real engine and CLI ---------------------------------------------------------


def write_config(tmp_path: Path, sandbox: Sandbox, *, extra: str = "",
                 agent_extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[agent]
data_dir = "{tmp_path}/data"
owner_emails = ["dana@example.com"]
{agent_extra}
[[sources]]
name = "fl"
platform = "freelancer"
[sources.settings]
token = {{ env = "{TOKEN_ENV}" }}
base_url = "{sandbox.base_url}"
rate_per_second = {FAST}
timeout = 5
max_retries = 1
{extra}
""")
    return path


def host() -> PluginHost:
    return make_plugin_host(entrypoints=False, extra=[plugins.freelancer])


def engine_sync(config_path: Path) -> tuple[SyncResult, Store]:
    config = load_config(config_path, host())
    store = Store(config.data_dir)
    engine = SyncEngine(config, host(), store)
    (result,) = engine.sync_all(["fl"])
    return result, store


def run_cli(config_path: Path, *args: str, expect: int = 0) -> Result:
    app = App(config_path, False, 0)
    app._host = host()
    result = CliRunner().invoke(cli, ["--config", str(config_path), *args], obj=app)
    assert result.exit_code == expect, (result.output, result.exception)
    return result
