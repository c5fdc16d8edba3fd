"""The ``maildir`` platform's part of ``retainer demo``: the sample mailbox as a Maildir.

The messages are the demo's sample mail (:func:`agent.demo.generate`); this module only
files them the way mbsync would: ``cur/`` for read mail, ``new/`` for unread, the
``Sent`` and ``Newsletters`` folders as Maildir++ subfolders.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from agent.connector import DemoContext, DemoSource
from agent.errors import ConfigError
from agent.files import ensure_private_dir

#: The demo mailbox's folder inside the demo's folder.
MAILDIR_NAME = "Maildir"
SOURCE_NAME = "demo-mail"


def write_maildir(root: Path, messages: Sequence[tuple[datetime, str, bool, bytes]]) -> int:
    """File ``(date, folder, seen, raw)`` messages under ``root``; return how many."""
    for folder in ("", ".Sent", ".Newsletters"):
        for sub in ("cur", "new", "tmp"):
            ensure_private_dir(root / folder / sub if folder else root / sub)
    for number, (when, folder, seen, raw) in enumerate(messages):
        directory = root / f".{folder}" if folder else root
        stamp = int(when.timestamp())
        base = f"{stamp}.M{number:04d}P1000.demo"
        path = directory / ("cur" if seen else "new") / (f"{base}:2,S" if seen else base)
        tmp = directory / "tmp" / base
        tmp.write_bytes(raw)
        tmp.chmod(0o600)
        os.utime(tmp, (stamp, stamp))
        tmp.rename(path)
    return len(messages)


@contextmanager
def demo(context: DemoContext) -> Iterator[DemoSource]:
    """Write the sample mailbox into ``<demo folder>/Maildir``; the source reads it."""
    from agent.demo import generate

    root = context.folder / MAILDIR_NAME
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} already exists; pick an empty folder for the demo "
                          "(retainer demo --dir NEW_FOLDER)")
    write_maildir(root, generate(context.now))
    yield DemoSource(SOURCE_NAME, {"path": str(root)}, every="5m")
