"""What a platform plugin provides: a :class:`Platform` descriptor and a :class:`Connector`.

Vocabulary: a *platform* is a kind of source (``imap``, ``upwork``); a *source* is one
configured account on it; a *connector* is the object that talks to that account for
one sync. The host owns the store, the cursor, retries and scheduling; a connector only
turns the remote side into :mod:`agent.models` records.
"""

from __future__ import annotations

import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

from agent.errors import UnsupportedOperation
from agent.models import (
    Attachment,
    Contract,
    Cursor,
    Identity,
    Message,
    Outgoing,
    Page,
    Submission,
)


class Settings(BaseModel):
    """Base for a platform's settings model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def expand_path(value: Any) -> Any:
    """``~`` and ``$VAR``/``${VAR}`` expanded, as a :class:`~pathlib.Path` (other values as given)."""
    if isinstance(value, str | os.PathLike):
        return Path(os.path.expandvars(os.fspath(value))).expanduser()
    return value


#: The validation context under which :data:`LocalFolder` checks the folder exists
#: (``load_config`` passes it, so ``retainer config check`` and ``retainer sync`` do).
CHECK_PATHS = {"check_paths": True}


def _existing_folder(path: Path, info: ValidationInfo) -> Path:
    if not (isinstance(info.context, dict) and info.context.get("check_paths")):
        return path  # built in code (a test), not read from a config file
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise ValueError(f"{path} {what}; create it or fix the path")
    return path


#: A path setting: ``~`` and environment variables (``$HOME``, ``${DROP}``) are expanded.
#: Use it for every file or folder a ``[sources.settings]`` table names.
LocalPath = Annotated[Path, BeforeValidator(expand_path)]

#: A :data:`LocalPath` that must name an existing folder: when the config file is read,
#: a missing one fails ``retainer config check`` (and ``retainer sync``, the daemon's
#: start) with the file, source and key, instead of a sync that finds nothing.
LocalFolder = Annotated[Path, BeforeValidator(expand_path), AfterValidator(_existing_folder)]

S = TypeVar("S", bound=BaseModel)


def _never() -> bool:
    return False


def _nobody(identity: Identity) -> bool:
    return False


@dataclass
class SourceContext:
    """What the host hands a connector: who it is, where it may write, and the owner's rules.

    :param source: the source's name from the config.
    :param platform: the platform name.
    :param state_dir: a 0700 folder of this source's own under the data folder, for
        tokens and other plugin state. Write files there with :func:`agent.files.write_private`.
    :param scratch_dir: a folder for downloads in progress (same filesystem as the store).
        It is emptied when a sync of this source starts, never during one.
    :param max_attachment_bytes: attachments larger than this are recorded with
        ``status="too_large"`` and not downloaded.
    :param is_owner: true for the owner's own identities (mail from them is outgoing).
    :param wants_attachments: true when files from this sender should be downloaded
        (the sender is a known contractor); other senders' files are recorded only.
    :param should_stop: true once the daemon was asked to stop: finish the page, return.
    :param state: this source's committed per-item state (read-only): what earlier pages
        set through ``Page.state``, kept up to date as pages are committed.
    :param log: the logger to use (``retainer.plugins.<platform>``); never log secrets.
    :param warnings: what went wrong in part while the sync went on (e.g. "no access to
        contracts"); append one line each. The host shows them in ``retainer status``.
    :param refetch: messages to read again before new mail (the ``extra`` a connector
        stored with each, plus ``"stored"``: its remote id, thread, subject and recipients):
        earlier messages of a sender just promoted to contractor, whose files were recorded
        but not downloaded. Connectors that cannot read messages again ignore it.

    A connector of a local source may also declare, with :meth:`quick_check`, which
    files or folders stand for its whole source, so that a later ``retainer sync`` that
    finds none of them changed skips it without loading any plugin.
    """

    source: str
    platform: str
    state_dir: Path
    scratch_dir: Path
    max_attachment_bytes: int = 50 * 1024 * 1024
    is_owner: Callable[[Identity], bool] = _nobody
    wants_attachments: Callable[[Identity], bool] = _nobody
    should_stop: Callable[[], bool] = _never
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("retainer.plugins"))
    options: dict[str, Any] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    warnings: list[str] = field(default_factory=list)
    refetch: list[dict[str, Any]] = field(default_factory=list)
    _quick: dict[str, list[int]] | None = field(default_factory=dict, init=False, repr=False)
    _quick_from: int = field(default=0, init=False, repr=False)

    def quick_check(self, paths: Iterable[str | os.PathLike[str]], *,
                    since: int | None = None) -> None:
        """Declare that ``paths`` stand for this whole source: as long as none of them
        changes (its mtime, size, inode and device), there is nothing new to read.

        Call it during :meth:`Connector.fetch`, *before* reading what the paths hold
        (their stamps are taken at the call, so a change during the read is seen next
        time), once or several times. If what the paths hold was looked at before the
        call (e.g. to find them), pass ``since=time.time_ns()`` taken before that look.

        After a sync that succeeded completely (no error, no warning, not stopped), the
        host keeps the stamps; the next ``retainer sync`` compares them (and the config,
        the roster and the installed plugins) before loading any plugin and, if nothing
        changed, records the source as synced with nothing new without calling the
        connector. A path changed within 2 s of the call (or of ``since``) is not trusted
        (a change in the same tick may not move its mtime), nor one that cannot be read:
        then nothing is kept and the next sync runs the connector.

        Declare only what covers *every* change that matters: e.g. a Maildir's ``cur/``
        and ``new/`` folders of each mailbox read (a delivery or a flag change renames a
        file in them, which moves the folder's mtime) and the folder that holds the
        mailboxes (a new mailbox). Remote sources never call it.
        """
        started = time.time_ns() if since is None else min(since, time.time_ns())
        if self._quick is None:
            return
        if not self._quick or started < self._quick_from:
            self._quick_from = started
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                self._quick = None  # cannot be told: no quick check for this sync
                return
            self._quick[os.fspath(path)] = [st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev]

    def try_again_next_sync(self) -> None:
        """Say that this sync left something to read again next time (a file it could
        not read) although none of the :meth:`quick_check` paths may change: the host
        keeps no stamps, so the next sync runs the connector."""
        self._quick = None

    def quick_stamps(self) -> dict[str, list[int]] | None:
        """For the host: the stamps :meth:`quick_check` took, or None when none were
        taken, one failed, or one was changed within 2 s of its taking (racy)."""
        if not self._quick:
            return None
        if any(stamp[0] >= self._quick_from - RACY_NS for stamp in self._quick.values()):
            return None
        return dict(self._quick)


#: How close to the stamps' taking a path's mtime makes it untrusted (git's racy rule).
RACY_NS = 2_000_000_000


class Connector(ABC, Generic[S]):
    """Talks to one source for one sync. Subclass it and implement :meth:`fetch`.

    The host creates a connector with the validated settings and a
    :class:`SourceContext`, calls :meth:`fetch` with the last committed cursor
    (``{}`` on the first sync), checks each yielded :class:`~agent.models.Page` (see
    :func:`check_page`), stores its records, commits its cursor, calls :meth:`committed`
    with it, and finally calls :meth:`close`.

    Raise :class:`~agent.errors.AuthError` when credentials are refused,
    :class:`~agent.errors.TransientError` (or :class:`~agent.errors.RateLimited`) for
    failures worth retrying, and :class:`~agent.errors.SourceError` for the rest.
    """

    #: Longest a single sync may run before the host treats it as hung (seconds).
    deadline: ClassVar[float] = 3600.0

    def __init__(self, settings: S, context: SourceContext) -> None:
        self.settings = settings
        self.context = context

    @abstractmethod
    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        """Yield pages of records newer than ``cursor``; each page carries the next cursor."""

    def committed(self, page: Page) -> None:
        """Called after ``page``'s records, state and cursor are committed to the store.

        For side effects that must wait until a page is safely stored: acknowledging
        items on the remote side, deleting the plugin's own temporary files, logging.
        Keep *state* in ``Page.state`` instead: it is committed with the page, so it
        survives a kill at any moment, while this call is lost if the process dies
        between the commit and the call. An exception here fails the sync (the page
        stays committed).
        """

    def send(self, outgoing: Outgoing) -> str:
        """Send a message to a contractor's thread; return its remote id.

        Platforms that cannot send leave this as it is.
        """
        raise UnsupportedOperation(
            f"the {self.context.platform} platform cannot send messages; "
            "reply on the platform itself"
        )

    def close(self) -> None:
        """Release connections. Called once after :meth:`fetch`, also after errors."""


@dataclass(frozen=True)
class Platform:
    """A kind of source a plugin provides, registered through ``register_platforms``.

    :param name: the value of ``platform =`` in a ``[[sources]]`` table; lowercase.
    :param connector: the :class:`Connector` subclass that syncs one source.
    :param settings: the pydantic model that validates ``[sources.settings]``.
    :param description: one line for ``retainer plugins``.
    :param signin: for sources that sign in with OAuth 2.0: given the validated settings
        and the source's name, the :class:`agent.oauth.OAuthClient` that
        ``retainer auth SOURCE`` uses (``None`` when this source needs no sign-in).
    :param options: the pydantic model that validates the config's ``[plugins.NAME]``
        table, handed to every source of this platform as ``SourceContext.options``.
        :class:`NoOptions` says the platform takes none, so any key there is a typo that
        ``retainer config check`` refuses. ``None`` (not declared): the keys pass unchecked,
        with a warning.
    :param demo: what this platform adds to ``retainer demo``: given a
        :class:`DemoContext`, a context manager that prepares sample data (files in the
        demo's folder, a local stand-in server), yields the :class:`DemoSource` that reads
        it, and stops what it started on exit. ``None``: the platform has no demo.
    """

    name: str
    connector: type[Connector[Any]]
    settings: type[BaseModel]
    description: str = ""
    signin: Callable[[Any, str], Any] | None = None
    options: type[BaseModel] | None = None
    demo: Callable[[DemoContext], AbstractContextManager[DemoSource]] | None = None


@dataclass(frozen=True)
class DemoContext:
    """What ``retainer demo`` hands a platform's ``demo`` factory.

    :param folder: the demo's own folder (0700); put files in a subfolder of it.
    :param now: the demo's "now"; generated dates end here, and the same ``now`` should
        give the same data.
    """

    folder: Path
    now: datetime


@dataclass(frozen=True)
class DemoSource:
    """One source a platform adds to the demo's config.

    :param name: the source's name, e.g. ``"demo-upwork"``.
    :param settings: its ``[sources.settings]`` table: strings, numbers, booleans, lists
        and one-level tables such as ``{"env": "NAME"}`` for a secret.
    :param every: how often the daemon would sync it.
    :param env: environment variables the settings name (secrets); set while the demo
        runs, never written to the config.
    :param authorize: writes the source's sign-in state (tokens) into the state folder
        it is given, standing in for ``retainer auth``.
    :param live: its data come from a server that stops when the demo ends; the source is
        then disabled in the config, so later syncs skip it.
    """

    name: str
    settings: Mapping[str, Any]
    every: str = "15m"
    env: Mapping[str, str] = field(default_factory=dict)
    authorize: Callable[[Path], object] | None = None
    live: bool = False


class NoOptions(BaseModel):
    """``Platform.options`` of a platform that takes no ``[plugins.NAME]`` options."""

    model_config = ConfigDict(extra="forbid")


# -- the checks the host runs on every page (and the contract kit on every record) -------


def check_cursor(cursor: object) -> str | None:
    """Why ``cursor`` cannot be committed (``None`` when it can: a JSON-able mapping)."""
    if cursor is None:
        return None
    if not isinstance(cursor, Mapping):
        return f"cursor {cursor!r} is a {type(cursor).__name__}, not a dict"
    try:
        json.dumps(dict(cursor), allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"cursor {cursor!r} is not JSON-serializable: {exc}"
    return None


def check_records(records: Sequence[object], *, unique: bool = True) -> list[str]:
    """Everything wrong with a batch of records, as sentences (empty when all is well).

    The host runs this on every page it is given, in every mode, and refuses a page with
    a problem (its cursor is not committed). Ids must be non-empty strings; with
    ``unique`` (the contract kit) no id may repeat in the batch (the host lets a page
    repeat one, e.g. one mail filed in two folders: the store keeps it once). *Stable*
    ids (the same item gets the same id on every fetch) can only be seen across fetches,
    so :class:`agent.testing.ConnectorContract` checks those.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for record in records:
        what = f"{type(record).__name__} {getattr(record, 'remote_id', '?')!r}"
        if not isinstance(record, Message | Submission | Contract):
            problems.append(f"{what}: not an agent.Message, agent.Submission or agent.Contract")
            continue
        if not isinstance(record.remote_id, str) or not record.remote_id.strip():
            problems.append(f"{what}: remote_id must be a non-empty str")
        key = f"{type(record).__name__}:{record.remote_id}"
        if unique and key in seen:
            problems.append(f"{what}: remote_id repeats in one batch")
        seen.add(key)
        for f in fields(record):
            value = getattr(record, f.name)
            if isinstance(value, datetime) and value.tzinfo is None:
                problems.append(f"{what}: {f.name} is a naive datetime; give it a timezone "
                                "(e.g. datetime.now(UTC))")
        required = {"sent_at": Message, "submitted_at": Submission}
        for name, kind in required.items():
            if isinstance(record, kind) and not isinstance(getattr(record, name), datetime):
                problems.append(f"{what}: {name} must be a datetime")
        people = [getattr(record, n) for n in ("sender", "contractor") if hasattr(record, n)]
        people += list(getattr(record, "recipients", ()))
        for person in people:
            if not isinstance(person, Identity) or not person.platform or not person.address:
                problems.append(f"{what}: {person!r} must be an Identity with platform and address")
        attachments: list[object] = list(getattr(record, "attachments", ()))
        if isinstance(record, Submission):
            attachments.append(record.attachment)
        for att in attachments:
            if not isinstance(att, Attachment):
                problems.append(f"{what}: attachment {att!r} is not an agent.Attachment")
            elif att.status == "stored" and att.data is None and (
                    att.path is None or not Path(att.path).is_file()):
                problems.append(f"{what}: attachment {att.filename!r} is 'stored' but has "
                                "neither data nor an existing path")
        for text_field in ("subject", "text", "title"):
            value = getattr(record, text_field, "")
            if not isinstance(value, str):
                problems.append(f"{what}: {text_field} must be a str")
    return problems


def check_page(page: object) -> list[str]:
    """Everything wrong with one value a connector's ``fetch`` yielded."""
    if not isinstance(page, Page):
        hint = (" (wrap records in agent.Page([...], cursor={...}))"
                if isinstance(page, Message | Submission | Contract) else "")
        return [f"fetch yielded a {type(page).__name__}, not an agent.Page{hint}"]
    if isinstance(page.records, str | bytes) or not isinstance(page.records, Sequence):
        return [f"Page.records must be a list of records, not {type(page.records).__name__}"]
    problems = check_records(page.records, unique=False)
    cursor_problem = check_cursor(page.cursor)
    if cursor_problem:
        problems.append(cursor_problem)
    if page.state is not None:
        state_problem = check_cursor(page.state)
        if state_problem:
            problems.append(state_problem.replace("cursor", "Page.state", 1))
        elif not all(isinstance(key, str) and key for key in page.state):
            problems.append("Page.state keys must be non-empty strings")
    return problems
