"""Retainer platform "drop-folder", written from docs/writing-plugins.md alone.

Contractors deliver into a shared, synced folder: ``<root>/<contractor>/<delivery>/<files>``.
A delivery's ``notes.txt`` (if any) is the message text; every other file is an
attachment, handed to the store by path (the store copies it; the folder stays as it is).
Deliveries are read in name order (``2026-01-05-logo``), so the cursor is the last
``<delivery>/<contractor>`` read; ``Page.state`` keeps what each delivery held, so a
file added to a delivery already stored is picked up (the message is yielded again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field

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
    hookimpl,
)

NOTES = "notes.txt"


class DropFolderSettings(Settings):
    """``root``: the shared folder; ``contractors``: contractor folder name -> email."""

    root: LocalFolder
    contractors: dict[str, str] = Field(default_factory=dict)
    page_size: int = Field(default=2, ge=1)


class DropFolderConnector(Connector[DropFolderSettings]):
    """One message per delivery folder; its files are the attachments."""

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        after = str(cursor.get("after", ""))
        found = sorted(
            (f"{delivery.name}/{person.name}", person, delivery)
            for person in self.settings.root.iterdir() if person.is_dir()
            for delivery in person.iterdir() if delivery.is_dir())
        # deliveries after the cursor, and earlier ones whose files changed since
        # they were stored (Page.state remembers each delivery's files)
        todo = [entry for entry in found if entry[0] > after or self.context.state.get(
            self.key(entry[1], entry[2]), signature(entry[2])) != signature(entry[2])]
        size = self.settings.page_size
        for start in range(0, len(todo), size):
            chunk = todo[start:start + size]
            records = [self.message(person, delivery) for _, person, delivery in chunk]
            state = {self.key(p, d): signature(d) for _, p, d in chunk}
            yield Page(records, cursor={"after": max(after, chunk[-1][0])}, state=state)
            if self.context.should_stop():
                return

    @staticmethod
    def key(person: Path, delivery: Path) -> str:
        return f"{person.name}/{delivery.name}"

    def message(self, person: Path, delivery: Path) -> Message:
        email = self.settings.contractors.get(person.name, f"{person.name}@drop.invalid")
        sender = Identity("email", email, person.name)
        notes = delivery / NOTES
        files = sorted(p for p in delivery.iterdir() if p.is_file() and p.name != NOTES)
        under_contract = person.name in self.settings.contractors
        wanted = under_contract or self.context.wants_attachments(sender)
        attachments = tuple(
            Attachment(f.name, size=f.stat().st_size, remote_id=f.name,
                       path=f if wanted else None,
                       status="stored" if wanted else "not_downloaded")
            for f in files)
        sent = datetime.fromtimestamp(delivery.stat().st_mtime, UTC)
        return Message(
            remote_id=self.key(person, delivery), sent_at=sent, sender=sender,
            subject=delivery.name, text=notes.read_text() if notes.is_file() else "",
            thread_remote_id=person.name, attachments=attachments,
            under_contract=under_contract)

    def committed(self, page: Page) -> None:
        """Acknowledge stored deliveries (here: a log in state_dir; a real platform
        might mark them received)."""
        log = self.context.state_dir / "acknowledged.txt"
        with log.open("a", encoding="utf-8") as handle:
            handle.writelines(f"{record.remote_id}\n" for record in page.records)


def signature(delivery: Path) -> str:
    """What a delivery holds: its files' names, sizes and modification times."""
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
                    for f in sorted(delivery.iterdir()) if f.is_file())


@hookimpl
def register_platforms(register: Callable[[Platform], None]) -> None:
    register(Platform("drop-folder", DropFolderConnector, DropFolderSettings,
                      "deliveries in a shared folder"))
