"""Helpers for the Upwork plugin tests: a sandbox, a connector wired to it, a sync loop."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from agent.connector import SourceContext
from agent.files import ensure_private_dir
from agent.models import Contract, Message, Record, Submission
from plugins.upwork.connector import UpworkConnector
from plugins.upwork.sandbox import Sandbox
from plugins.upwork.settings import UpworkSettings

SOURCE = "up"
ROOT = Path(__file__).resolve().parents[3]

# Runs the real CLI in a subprocess. Until pyproject declares the `upwork` entry point the
# plugin module is added to the host directly; afterwards the entry point is used as is.
CLI_DRIVER = """
import sys
from importlib import metadata
import plugins.upwork
from agent.cli import App, build_cli
from agent.config import default_config_path
from agent.plugins import make_plugin_host
app = App(default_config_path(), False, 0)
names = {ep.name for ep in metadata.entry_points(group="retainer")}
app._host = make_plugin_host(extra=[] if "upwork" in names else [plugins.upwork])
build_cli(app).main(args=sys.argv[1:], prog_name="retainer", obj=app)
"""


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-c", CLI_DRIVER, *args]


@dataclass
class Sync:
    """The outcome of running ``fetch`` to the end (or to an error)."""

    records: list[Record] = field(default_factory=list)
    cursor: dict[str, Any] = field(default_factory=dict)
    pages: int = 0
    error: Exception | None = None
    attachment_bytes: dict[str, bytes] = field(default_factory=dict)

    @property
    def messages(self) -> list[Message]:
        return [r for r in self.records if isinstance(r, Message)]

    @property
    def contracts(self) -> list[Contract]:
        return [r for r in self.records if isinstance(r, Contract)]

    @property
    def submissions(self) -> list[Submission]:
        return [r for r in self.records if isinstance(r, Submission)]


def make_settings(sandbox: Sandbox, **overrides: Any) -> UpworkSettings:
    overrides.setdefault("client_secret", SecretStr(sandbox.client_secret))
    return UpworkSettings.model_validate(sandbox.settings(**overrides))


def make_context(tmp: Path, *, max_attachment_bytes: int = 50 * 1024 * 1024) -> SourceContext:
    return SourceContext(
        source=SOURCE,
        platform="upwork",
        state_dir=ensure_private_dir(tmp / "sources" / SOURCE),
        scratch_dir=ensure_private_dir(tmp / "tmp"),
        max_attachment_bytes=max_attachment_bytes,
        log=logging.getLogger("retainer.plugins.upwork"),
    )


def connector(
    sandbox: Sandbox, tmp: Path, *, context: SourceContext | None = None,
    cls: type[UpworkConnector] = UpworkConnector, **settings: Any,
) -> UpworkConnector:
    return cls(make_settings(sandbox, **settings), context or make_context(tmp))


def run_sync(conn: UpworkConnector, cursor: dict[str, Any] | None = None, *,
             raise_errors: bool = True) -> Sync:
    """Drive ``fetch`` like the host: keep each page's records and commit its cursor."""
    result = Sync(cursor=dict(cursor or {}))
    try:
        for page in conn.fetch(result.cursor):
            result.pages += 1
            result.records.extend(page.records)
            for record in page.records:  # read downloads before the connector removes them
                if isinstance(record, Message):
                    for att in record.attachments:
                        if att.path is not None:
                            result.attachment_bytes[att.remote_id] = att.path.read_bytes()
            if page.cursor is not None:
                result.cursor = dict(page.cursor)
    except Exception as exc:
        if raise_errors:
            raise
        result.error = exc
    finally:
        conn.close()
    return result


def ids(records: Iterator[Record] | list[Record]) -> list[str]:
    return [r.remote_id for r in records]
