"""Message builders and a connector factory for the IMAP tests."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from agent.connector import SourceContext
from agent.models import Identity, Message, Page
from plugins.imap.connector import ImapConnector
from plugins.imap.settings import ImapSettings
from tests.servers.dovecot import PASSWORD_ENV, Mailbox

CONTRACTOR = "maria@design.example"
STRANGER = "someone@elsewhere.example"
BASE = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def make_message(i: int, *, sender: str = CONTRACTOR, attachments: Iterable[tuple[str, bytes, str]] = (),
                 html_only: bool = False, subject: str | None = None,
                 message_id: str | None = None, inline_image: bool = False) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sender {i} <{sender}>"
    msg["To"] = "Owner <owner@example.com>"
    msg["Subject"] = subject if subject is not None else f"Message {i} \u00e9t\u00e9"
    msg["Date"] = format_datetime(BASE + timedelta(minutes=i))
    msg["Message-ID"] = message_id or f"<m{i}@test.example>"
    body = f"Hello number {i}\nsecond line \u00fcber\n"
    if html_only:
        msg.set_content(f"<html><body><p>Hello <b>number {i}</b></p><script>x()</script></body></html>",
                        subtype="html")
    else:
        msg.set_content(body, cte="quoted-printable")
        msg.add_alternative(f"<p>Hello number {i}</p>", subtype="html")
    if inline_image:
        msg.add_attachment(b"\x89PNG\r\n\x1a\nlogo", maintype="image", subtype="png",
                           filename="logo.png", disposition="inline", cid="<logo@x>")
    for filename, data, ctype in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def corpus(count: int, *, start: int = 0, seed: int = 7, attachment_every: int = 3,
           sender: str = CONTRACTOR) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(start, start + count):
        files = []
        if attachment_every and i % attachment_every == 0:
            files.append((f"file-{i}.pdf", b"%PDF-1.4\n" + rng.randbytes(rng.randint(100, 30000)),
                          "application/pdf"))
        out.append(make_message(i, sender=sender, attachments=files))
    return out


def context(tmp_path: Path, *, contractors: Iterable[str] = (CONTRACTOR,),
            max_attachment_bytes: int = 50 * 1024 * 1024, stop_after: int | None = None,
            ) -> SourceContext:
    keys = {f"email:{c}" for c in contractors}
    state = tmp_path / "state"
    scratch = tmp_path / "scratch"
    state.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return stop_after is not None and calls["n"] > stop_after

    def wants(identity: Identity) -> bool:
        return identity.key in keys

    return SourceContext(source="inbox", platform="imap", state_dir=state, scratch_dir=scratch,
                         max_attachment_bytes=max_attachment_bytes, wants_attachments=wants,
                         should_stop=should_stop, log=logging.getLogger("retainer.plugins.imap"))


def settings(mailbox: Mailbox, monkeypatch: Any, **overrides: Any) -> ImapSettings:
    monkeypatch.setenv(PASSWORD_ENV, mailbox.password)
    values = mailbox.settings(security=overrides.pop("security", "none"))
    values.update(overrides)
    return ImapSettings.model_validate(values)


def connector(mailbox: Mailbox, monkeypatch: Any, tmp_path: Path, ctx: SourceContext | None = None,
              **overrides: Any) -> ImapConnector:
    return ImapConnector(settings(mailbox, monkeypatch, **overrides), ctx or context(tmp_path))


def run(conn: ImapConnector, cursor: dict[str, Any]) -> tuple[list[Message], dict[str, Any], list[Page]]:
    """Run one fetch to the end; the messages, the last committed cursor and the pages."""
    pages: list[Page] = []
    try:
        for page in conn.fetch(cursor):
            pages.append(page)
            if page.cursor is not None:
                cursor = dict(page.cursor)
    finally:
        conn.close()
    messages = [r for p in pages for r in p.records if isinstance(r, Message)]
    return messages, cursor, pages


def iter_pages(conn: ImapConnector, cursor: dict[str, Any]) -> Iterator[Page]:
    yield from conn.fetch(cursor)
