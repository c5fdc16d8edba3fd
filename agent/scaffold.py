"""``retainer plugins new NAME``: write a complete, working plugin project to start from.

The project installs with pip and passes its own tests at once: its connector reads
messages from a folder of JSON files (a stand-in for a real API), and its tests run
Retainer's contract kit (:mod:`agent.testing`) against it. Authors then replace the
folder reading with calls to their platform.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from agent.errors import PluginError

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Names:
    """How one platform name is spelled in the places a plugin needs it."""

    platform: str  # acme-portal: the entry-point name and ``platform =`` in the config
    dist: str  # retainer-acme-portal: the distribution on PyPI
    module: str  # retainer_acme_portal: the importable module
    title: str  # AcmePortal: the class-name prefix

    @classmethod
    def of(cls, name: str) -> Names:
        name = name.strip().lower().removeprefix("retainer-")
        if not _NAME.match(name):
            raise PluginError(
                f'"{name}" is not a usable platform name; use lowercase letters, digits and '
                'single dashes, starting with a letter (e.g. "acme-portal")')
        return cls(platform=name, dist=f"retainer-{name}",
                   module="retainer_" + name.replace("-", "_"),
                   title="".join(part.capitalize() for part in name.split("-")))


PYPROJECT = Template('''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "Retainer platform plugin: $platform"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["retainer"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This line is the whole plugin registration: Retainer finds the module through it.
[project.entry-points.retainer]
$platform = "$module"

[tool.setuptools]
py-modules = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
''')

MODULE = Template('''\
"""Retainer platform "$platform".

This starter reads messages from a folder of JSON files, one message per file, named so
that they sort oldest first (e.g. ``000001.json``)::

    {"from": "maria@example.com", "name": "Maria Lopez",
     "sent_at": "2026-01-05T10:00:00+00:00", "text": "Draft attached",
     "files": [{"name": "draft.pdf", "data": "<base64>"}]}

Replace :meth:`${title}Connector.fetch` with calls to your platform's API, keeping its
promises: pages of typed records, each with the cursor to resume after it; AuthError
when credentials are refused; TransientError for failures worth retrying.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from agent import (
    Attachment,
    Connector,
    Cursor,
    Identity,
    LocalFolder,
    Message,
    Page,
    Platform,
    Settings,
    SourceError,
    TransientError,
    hookimpl,
)
from pydantic import Field


class ${title}Settings(Settings):
    """The ``[sources.settings]`` table of a ``$platform`` source."""

    path: LocalFolder  # "~" and $$VARS are expanded; a missing folder fails `config check`
    page_size: int = Field(default=50, ge=1)


class ${title}Connector(Connector[${title}Settings]):
    """Reads new message files in name order; the cursor is the last name read."""

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        folder = self.settings.path
        if not folder.is_dir():
            raise SourceError(f"{folder} is not a folder; check sources.settings.path")
        after = str(cursor.get("after", ""))
        try:
            names = sorted(p.name for p in folder.glob("*.json") if p.name > after)
        except OSError as exc:
            raise TransientError(f"could not list {folder}: {exc}; will retry") from exc
        size = self.settings.page_size
        for start in range(0, len(names), size):
            chunk = names[start:start + size]
            records = [self.message(folder / name) for name in chunk]
            yield Page(records, {"after": chunk[-1]})
            if self.context.should_stop():
                return

    def message(self, path: Path) -> Message:
        doc = json.loads(path.read_text(encoding="utf-8"))
        files = tuple(
            Attachment(f["name"], data=base64.b64decode(f["data"]))
            for f in doc.get("files", ())
        )
        return Message(
            remote_id=path.stem,
            sent_at=datetime.fromisoformat(doc["sent_at"]),
            sender=Identity("email", doc["from"], doc.get("name", "")),
            text=doc.get("text", ""),
            attachments=files,
        )


@hookimpl
def register_platforms(register: Callable[[Platform], None]) -> None:
    register(Platform("$platform", ${title}Connector, ${title}Settings,
                      "messages from a folder of JSON files"))
''')

TESTS = Template('''\
"""$platform passes Retainer's contract kit, the checks every platform passes."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from agent.testing import ConnectorContract, RemoteFixture

import $module


class FolderRemote(RemoteFixture):
    """The remote side: a folder the tests write message files into."""

    plugin = $module
    platform = "$platform"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True)
        self.serial = itertools.count(1)

    def settings(self) -> dict[str, Any]:
        return {"path": str(self.folder), "page_size": 2}

    def write(self, **fields: Any) -> None:
        doc = {"from": "maria@example.com", "name": "Maria Lopez",
               "sent_at": "2026-01-05T10:00:00+00:00", **fields}
        (self.folder / f"{next(self.serial):06d}.json").write_text(json.dumps(doc))

    def add_message(self, text: str) -> None:
        self.write(text=text)

    def add_attachment(self, filename: str, data: bytes) -> None:
        self.write(text="files", files=[{"name": filename,
                                         "data": base64.b64encode(data).decode()}])


class Test${title}Contract(ConnectorContract):
    # A folder has no credentials to refuse and no network to drop. Once your connector
    # talks to a server, implement break_auth() and break_transiently() in the remote
    # fixture and delete these two lines.
    test_auth_failure_is_auth_error = None  # type: ignore[assignment]
    test_transient_failure_is_transient_error = None  # type: ignore[assignment]

    @pytest.fixture
    def remote(self, tmp_path: Path) -> RemoteFixture:
        return FolderRemote(tmp_path / "remote")
''')

README = Template('''\
# $dist

A [Retainer](https://github.com/) platform plugin: `platform = "$platform"`.

## Install

    pip install -e .
    retainer plugins            # lists "$platform"

## Configure

```toml
[[sources]]
name = "$platform"
platform = "$platform"
every = "15m"

[sources.settings]
path = "~/$platform-messages"
```

Then `retainer sync $platform`.

## Test

    pip install -e '.[test]'
    pytest

The tests subclass `agent.testing.ConnectorContract`, the checks every Retainer platform
passes: first, no-op and incremental syncs, cursors committed after their records,
idempotent re-fetch, resuming an interrupted sync, error mapping, hostile file names.
See Retainer's docs/writing-plugins.md.
''')


def render(name: str) -> dict[str, str]:
    """The project's files (relative path to text) for platform ``name``."""
    names = Names.of(name)
    values = {"platform": names.platform, "dist": names.dist, "module": names.module,
              "title": names.title}
    return {
        "pyproject.toml": PYPROJECT.substitute(values),
        f"{names.module}.py": MODULE.substitute(values),
        f"tests/test_{names.module}.py": TESTS.substitute(values),
        "README.md": README.substitute(values),
    }


def write_project(name: str, directory: Path | None = None) -> Path:
    """Write the project into ``directory`` (default: ``./retainer-NAME``); return it."""
    names = Names.of(name)
    target = Path(directory) if directory is not None else Path.cwd() / names.dist
    if target.exists() and any(target.iterdir()):
        raise PluginError(f"{target} already exists and is not empty; "
                          "pass --dir with a new folder")
    files = render(name)
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


__all__ = ["Names", "render", "write_project"]
