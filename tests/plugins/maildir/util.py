"""Building real Maildirs on disk for the tests, delivered the way MTAs do (tmp/ then new/)."""

from __future__ import annotations

import itertools
import logging
import os
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from agent.connector import SourceContext
from agent.models import Identity, Message
from plugins.maildir.connector import MaildirConnector, MaildirSettings

_counter = itertools.count(1)


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def mail(n: int, *, sender: str = "maria@example.com", subject: str = "",
         attachment: tuple[str, bytes] | None = None, msgid: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Maria Lopez <{sender}>"
    msg["To"] = "owner@example.com"
    msg["Subject"] = subject or f"Message {n}"
    msg["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
    msg["Message-ID"] = msgid or f"<m{n}@example.com>"
    msg.set_content(f"Body of message {n}\n")
    if attachment is not None:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="octet-stream",
                           filename=name)
    return msg.as_bytes()


def deliver(folder: Path, raw: bytes, *, name: str | None = None, sub: str = "new",
            flags: str | None = None) -> Path:
    """Write to tmp/ then rename into new/ (or cur/ with flags), like an MTA or mbsync."""
    make_maildir(folder)
    base = name or f"1767600000.M{next(_counter)}P{os.getpid()}.testhost"
    tmp = folder / "tmp" / base
    tmp.write_bytes(raw)
    final = folder / sub / (base + (f":2,{flags}" if flags is not None else ""))
    tmp.rename(final)
    return final


def context(tmp_path: Path, *, contractors: tuple[str, ...] = ("maria@example.com",),
            max_attachment_bytes: int = 50 * 1024 * 1024, **options: Any) -> SourceContext:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return SourceContext(
        source="mail", platform="maildir", state_dir=state, scratch_dir=scratch,
        max_attachment_bytes=max_attachment_bytes,
        is_owner=lambda i: i.address == "owner@example.com",
        wants_attachments=lambda i: i.address in contractors,
        log=logging.getLogger("retainer.plugins.maildir"), **options,
    )


def connector(root: Path, tmp_path: Path, **settings: Any) -> MaildirConnector:
    ctx_options = settings.pop("context", {})
    return MaildirConnector(MaildirSettings(path=root, **settings),
                            context(tmp_path, **ctx_options))


def sync(conn: MaildirConnector, cursor: dict[str, Any]) -> tuple[list[Message], dict[str, Any]]:
    """Run one fetch like the host does; return the records and the last committed cursor."""
    records: list[Message] = []
    for page in conn.fetch(cursor):
        records.extend(r for r in page.records if isinstance(r, Message))
        if page.cursor is not None:
            cursor = dict(page.cursor)
    return records, cursor


def owner() -> Identity:
    return Identity("email", "owner@example.com")
