"""The Maildir connector: folders, the "already read" cursor and message files.

The cursor. Maildir file names are unique and stable except for the ``:2,FLAGS``
suffix (and mbsync's ``,U=123``), which changes when a message is read, flagged or
moved from ``new/`` to ``cur/``. What remains is the message's *key*. The set of keys
already read is kept in two layers so the cursor the host commits after every page
stays small even for a 50,000-message Maildir:

* a *snapshot*: a gzipped JSON file in the source's state folder, named after a hash
  of its content and never changed once written;
* ``added``: the keys read since that snapshot, in the cursor itself.

When ``added`` grows past :data:`COMPACT_AT` keys, a new snapshot is written (before
the cursor that names it is yielded, so a committed cursor never points to a missing
file) and ``added`` starts again. Snapshots no committed cursor names are deleted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from agent.connector import Connector, LocalFolder, Settings, SourceContext
from agent.errors import SourceError
from agent.files import write_private
from agent.mail import backfill_context, backfilled, message_from_bytes, too_large_message
from agent.models import Cursor, Message, Page

CURSOR_VERSION = 1
#: Keys in the cursor's ``added`` list before they are folded into a new snapshot.
COMPACT_AT = 2000
#: How deep verbatim subfolders (``Clients/Acme/2024``) are searched.
MAX_FOLDER_DEPTH = 8
#: Bytes read from an over-size message to find its header.
HEADER_PEEK = 256 * 1024
ROOT_NAME = "INBOX"
SNAPSHOT_PREFIX = "seen-"
SNAPSHOT_SUFFIX = ".json.gz"

_INFO = re.compile(r"[:;!][12],[^/]*$")
_MBSYNC_UID = re.compile(r",U=\d+")
_SUBDIRS = ("new", "cur")


class MaildirSettings(Settings):
    """``[sources.settings]`` of a ``maildir`` source.

    :param path: the Maildir's root folder (``~`` and ``$VARS`` are expanded; it must exist).
    :param folders: folder names to read (``INBOX`` is the root folder, subfolders by
        their name, e.g. ``Sent`` or ``Clients/Acme``); default: all of them.
    :param exclude: folder names to skip (e.g. ``["Trash", "Junk"]``).
    :param page_size: messages per stored page.
    :param max_message_mb: message files larger than this are not read whole: their
        header is kept and the message is flagged ``too_large``. Default: twice
        ``agent.max_attachment_mb``, at least 64.
    """

    path: LocalFolder
    folders: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    page_size: int = Field(default=200, ge=1, le=5000)
    max_message_mb: float | None = Field(default=None, gt=0)


@dataclass(frozen=True)
class Folder:
    """One Maildir folder: its display name and the directory holding cur/new/tmp."""

    name: str
    path: Path


@dataclass
class Stats:
    """What the last :meth:`MaildirConnector.fetch` did (for logs and tests)."""

    folders: int = 0
    listed: int = 0
    read: int = 0
    skipped: int = 0


@dataclass
class SeenState:
    """The keys already read: the snapshot's plus those added since."""

    snapshot_id: str = ""
    base: dict[str, set[str]] = field(default_factory=dict)
    added: dict[str, list[str]] = field(default_factory=dict)
    added_sets: dict[str, set[str]] = field(default_factory=dict)

    def has(self, folder: str, key: str) -> bool:
        return key in self.base.get(folder, ()) or key in self.added_sets.get(folder, ())

    def add(self, folder: str, key: str) -> None:
        known = self.added_sets.setdefault(folder, set())
        if key not in known:
            known.add(key)
            self.added.setdefault(folder, []).append(key)

    def added_count(self) -> int:
        return sum(len(keys) for keys in self.added.values())

    def cursor(self) -> dict[str, Any]:
        return {
            "v": CURSOR_VERSION,
            "snapshot": self.snapshot_id,
            "added": {name: list(keys) for name, keys in self.added.items()},
        }


def message_key(filename: str) -> str:
    """A Maildir file's stable unique name: without ``:2,FLAGS`` and mbsync's ``,U=N``."""
    key = _MBSYNC_UID.sub("", _INFO.sub("", filename))
    # undecodable bytes in a name (surrogate escapes) become plain text the store keeps
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def message_flags(filename: str) -> str:
    match = _INFO.search(filename)
    return match.group(0)[3:] if match else ""


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def discover_folders(root: Path, log: logging.Logger | None = None,
                     scanned: list[Path] | None = None) -> list[Folder]:
    """Every Maildir folder under ``root``: the root itself (``INBOX``), Maildir++
    subfolders (``.Sent`` -> ``Sent``) and verbatim subfolders (``Clients/Acme``).
    ``scanned`` gets every folder whose listing decided what was found (a folder added,
    removed or turned into a Maildir changes the mtime of one of them)."""
    found: dict[str, Folder] = {}

    def add(name: str, path: Path) -> None:
        if name in found:
            if log is not None:
                log.warning("Maildir folders %s and %s both read as %r; keeping the first",
                            found[name].path, path, name)
            return
        found[name] = Folder(name, path)

    if is_maildir(root):
        add(ROOT_NAME, root)
    stack: list[tuple[Path, str, int]] = [(root, "", 0)]
    while stack:
        directory, prefix, depth = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        if scanned is not None:
            scanned.append(directory)
        for entry in entries:
            name = entry.name
            if name in _SUBDIRS or name == "tmp":
                continue
            try:
                if not entry.is_dir():
                    continue
            except OSError:
                continue
            path = Path(entry.path)
            if name.startswith("."):
                # Maildir++: flat, dot-prefixed folders directly under the root
                if depth == 0 and len(name) > 1 and name != "..":
                    if scanned is not None:
                        scanned.append(path)
                    if is_maildir(path):
                        add(name[1:], path)
                continue
            display = f"{prefix}{name}"
            if is_maildir(path):
                add(display, path)
            if depth + 1 < MAX_FOLDER_DEPTH:
                stack.append((path, f"{display}/", depth + 1))
    return sorted(found.values(), key=lambda f: (f.name != ROOT_NAME, f.name))


class MaildirConnector(Connector[MaildirSettings]):
    """Reads new message files from a local Maildir; see the module docstring."""

    reads_mail: ClassVar[bool] = True

    def __init__(self, settings: MaildirSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self.log = context.log
        self.stats = Stats()

    # -- folders and files -------------------------------------------------------------

    def folders(self, scanned: list[Path] | None = None) -> list[Folder]:
        """The folders this source reads, after ``folders`` and ``exclude`` (``scanned``:
        see :func:`discover_folders`)."""
        root = self.settings.path
        if not root.exists():
            raise SourceError(
                f"{self.context.source}: the Maildir {root} does not exist; "
                "check sources.settings.path (and that your mail sync tool has run)"
            )
        if not root.is_dir():
            raise SourceError(f"{self.context.source}: {root} is not a folder; "
                              "sources.settings.path must name a Maildir folder")
        found = discover_folders(root, self.log, scanned)
        if not found:
            raise SourceError(
                f"{self.context.source}: no Maildir folders (with cur/ and new/) under "
                f"{root}; check sources.settings.path"
            )
        chosen = found
        if self.settings.folders is not None:
            by_name = {f.name: f for f in found}
            missing = [n for n in self.settings.folders if n not in by_name]
            chosen = [by_name[n] for n in self.settings.folders if n in by_name]
            if missing:
                known = ", ".join(f.name for f in found)
                message = (f"{self.context.source}: Maildir folder(s) "
                           f"{', '.join(missing)} not found under {root} (found: {known}); "
                           "fix sources.settings.folders")
                if not chosen:
                    raise SourceError(message)
                self.log.warning("%s", message)
        excluded = set(self.settings.exclude)
        return [f for f in chosen if f.name not in excluded]

    def list_folder(self, folder: Folder) -> dict[str, str]:
        """key -> file path relative to the folder (``cur/KEY:2,S``), new/ before cur/."""
        files: dict[str, str] = {}
        for sub in _SUBDIRS:
            try:
                with os.scandir(folder.path / sub) as entries:
                    names = [e.name for e in entries if not e.name.startswith(".")]
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.log.warning("%s: cannot list %s: %s", self.context.source,
                                 folder.path / sub, exc.strerror or exc)
                continue
            for name in names:
                files[message_key(name)] = f"{sub}/{name}"  # cur/ wins over new/
        return files

    # -- the seen set ------------------------------------------------------------------

    def _snapshot_path(self, snapshot_id: str) -> Path:
        return self.context.state_dir / f"{SNAPSHOT_PREFIX}{snapshot_id}{SNAPSHOT_SUFFIX}"

    def load_seen(self, cursor: Cursor) -> SeenState:
        state = SeenState()
        if not cursor:
            return state
        if cursor.get("v") != CURSOR_VERSION:
            self.log.warning("%s: the saved Maildir position is from another version; "
                             "reading every message again (repeats are merged)",
                             self.context.source)
            return state
        added = cursor.get("added") or {}
        if isinstance(added, dict):
            for name, keys in added.items():
                for key in keys if isinstance(keys, list) else ():
                    state.add(str(name), str(key))
        snapshot_id = str(cursor.get("snapshot") or "")
        if snapshot_id:
            path = self._snapshot_path(snapshot_id)
            try:
                data = json.loads(gzip.decompress(path.read_bytes()))
                state.base = {name: set(keys) for name, keys in data["folders"].items()}
                state.snapshot_id = snapshot_id
            except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
                self.log.warning(
                    "%s: the list of Maildir files already read (%s) is missing or damaged "
                    "(%s); reading those messages again (repeats are merged)",
                    self.context.source, path, type(exc).__name__)
        return state

    def compact(self, state: SeenState, listings: dict[str, dict[str, str]]) -> None:
        """Fold ``added`` into a new snapshot, dropping keys no longer in the folders."""
        merged: dict[str, list[str]] = {}
        for name, listing in listings.items():
            keys = [k for k in listing if state.has(name, k)]
            if keys:
                merged[name] = sorted(keys)
        payload = json.dumps({"v": CURSOR_VERSION, "folders": merged}, sort_keys=True,
                             separators=(",", ":")).encode()
        snapshot_id = hashlib.sha256(payload).hexdigest()[:20]
        path = self._snapshot_path(snapshot_id)
        if not path.exists():
            write_private(path, gzip.compress(payload, mtime=0))
        state.snapshot_id = snapshot_id
        state.base = {name: set(keys) for name, keys in merged.items()}
        state.added = {}
        state.added_sets = {}

    def remove_old_snapshots(self, keep: str) -> None:
        directory = self.context.state_dir
        if not directory.is_dir():
            return
        for entry in directory.iterdir():
            name = entry.name
            if (name.startswith(SNAPSHOT_PREFIX) and name.endswith(SNAPSHOT_SUFFIX)
                    and name != f"{SNAPSHOT_PREFIX}{keep}{SNAPSHOT_SUFFIX}"):
                entry.unlink(missing_ok=True)

    # -- fetching ----------------------------------------------------------------------

    def max_message_bytes(self) -> int:
        if self.settings.max_message_mb is not None:
            return int(self.settings.max_message_mb * 1024 * 1024)
        return max(2 * self.context.max_attachment_bytes, 64 * 1024 * 1024)

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        self.stats = Stats()
        state = self.load_seen(cursor)
        self.remove_old_snapshots(keep=state.snapshot_id)
        looked = time.time_ns()
        scanned: list[Path] = []
        folders = self.folders(scanned)
        # what stands for this whole source, stamped before the files are listed: the
        # folders discovery read and each mailbox's new/ and cur/ (a delivery, a flag
        # change or a move renames a file in one of them)
        self.context.quick_check(
            [*scanned, *(folder.path / sub for folder in folders for sub in _SUBDIRS)],
            since=looked)
        yield from self._refetch(folders)
        listings: dict[str, dict[str, str]] = {}
        todo: list[tuple[Folder, str, str]] = []
        for folder in folders:
            listing = self.list_folder(folder)
            listings[folder.name] = listing
            self.stats.listed += len(listing)
            for key in sorted(listing):
                if not state.has(folder.name, key):
                    todo.append((folder, key, listing[key]))
        self.stats.folders = len(folders)
        if not todo:
            self.log.debug("%s: nothing new in %d Maildir folder(s)", self.context.source,
                           len(folders))
            return
        self.log.info("%s: %d new message file(s) in %d Maildir folder(s)",
                      self.context.source, len(todo), len(folders))
        records: list[Message] = []
        done = 0
        for folder, key, relative in todo:
            if self.context.should_stop():
                break
            message = self.read_message(folder, relative)
            done += 1
            if message is None:
                continue
            records.append(message)
            state.add(folder.name, key)
            if len(records) >= self.settings.page_size:
                yield self._page(state, listings, records, done, len(todo))
                records = []
        if records:
            yield self._page(state, listings, records, done, len(todo))

    def _refetch(self, folders: list[Folder]) -> Iterator[Page]:
        """Message files the host asked for again (``context.refetch``), by folder and
        file key; their pages carry no cursor."""
        by_name = {folder.name: folder for folder in folders}
        wanted: dict[str, list[str]] = {}
        for extra in self.context.refetch:
            name, key = extra.get("folder"), extra.get("file")
            if isinstance(name, str) and isinstance(key, str) and name in by_name:
                wanted.setdefault(name, []).append(key)
        for name, keys in wanted.items():
            folder = by_name[name]
            listing = self.list_folder(folder)
            reading = backfill_context(self.context)
            records = [backfilled(message) for key in keys if key in listing
                       for message in [self.read_message(folder, listing[key], reading)]
                       if message is not None]
            self.log.info("%s: read %d earlier message(s) in %s again for their files",
                          self.context.source, len(records), name)
            for start in range(0, len(records), self.settings.page_size):
                yield Page(records=records[start:start + self.settings.page_size], cursor=None)

    def _page(self, state: SeenState, listings: dict[str, dict[str, str]],
              records: list[Message], done: int, total: int) -> Page:
        if state.added_count() >= COMPACT_AT:
            self.compact(state, listings)
        return Page(records=list(records), cursor=state.cursor(), progress=(done, total))

    def read_message(self, folder: Folder, relative: str,
                     context: SourceContext | None = None) -> Message | None:
        """Parse one message file; ``None`` (and a log line) if it cannot be read now."""
        path = folder.path / relative
        limit = self.max_message_bytes()
        try:
            with path.open("rb") as handle:
                st = os.fstat(handle.fileno())
                too_large = st.st_size > limit
                raw = handle.read(HEADER_PEEK if too_large else -1)
        except FileNotFoundError:
            # moved (new/ -> cur/) or deleted since the listing: the next sync sees it
            self.log.debug("%s: %s vanished while reading; will look again next sync",
                           self.context.source, path)
            self.stats.skipped += 1
            return None
        except OSError as exc:
            self.log.warning("%s: cannot read %s (%s); fix its permissions, it will be "
                             "tried again next sync", self.context.source, path,
                             exc.strerror or type(exc).__name__)
            self.stats.skipped += 1
            self.context.try_again_next_sync()  # a chmod does not change the folder
            return None
        self.stats.read += 1
        mtime = datetime.fromtimestamp(st.st_mtime, UTC)
        extra = {"folder": folder.name, "flags": message_flags(path.name),
                 "file": message_key(path.name)}
        if too_large:
            return self._too_large(raw, st.st_size, limit, mtime, extra, path)
        return message_from_bytes(raw, context or self.context, fallback_date=mtime,
                                  extra=extra)

    def _too_large(self, head: bytes, size: int, limit: int, mtime: datetime,
                   extra: dict[str, Any], path: Path) -> Message:
        self.log.warning(
            "%s: %s is %d bytes, over the %d byte message cap; kept its header only "
            "(raise sources.settings.max_message_mb to read it whole)",
            self.context.source, path, size, limit)
        return too_large_message(head, size, limit, mtime, extra)
