"""The contract test kit for platform plugins (a pytest plugin: installing Retainer loads it).

A connector's tests subclass :class:`ConnectorContract` and override one fixture,
``remote``, returning a :class:`RemoteFixture`: the remote side of one source (a local
server, a sandbox, a folder) that the kit can add messages to and break on purpose::

    from agent.testing import ConnectorContract, RemoteFixture

    class FolderRemote(RemoteFixture):
        plugin = my_plugin_module          # the object with the @hookimpl functions
        platform = "my-platform"
        ...

    class TestMyPlatform(ConnectorContract):
        @pytest.fixture
        def remote(self, tmp_path):
            return FolderRemote(tmp_path / "remote")

Every check runs the real sync engine against a real store in ``tmp_path``: the same
path ``retainer sync`` takes. A check that cannot apply to a platform (a local folder has
no credentials to refuse) is switched off by setting it to ``None`` in the subclass::

    test_auth_failure_is_auth_error = None

For a plugin's own tests, :func:`run_sync` runs one real sync of a plugin into a data
folder and returns what was stored::

    from agent.testing import run_sync

    def test_notes_become_messages(tmp_path):
        (tmp_path / "drop").mkdir()
        synced = run_sync(my_plugin_module, {"path": str(tmp_path / "drop")}, tmp_path / "data")
        assert synced.result.ok and synced.messages() == []

Fixtures for any test: ``plugin_host`` (a fresh plugin host that loads no entry
points) and ``memory_store`` (a :class:`~agent.store.memory.MemoryStore`).
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agent.config import AgentSection, Config, ContractorSeed, SourceConfig
from agent.connector import Connector, check_cursor, check_records
from agent.models import (
    ContractorRecord,
    Cursor,
    DeliverableRecord,
    IdentityRecord,
    MessageRecord,
    Page,
    Record,
)
from agent.plugins import PluginHost, make_plugin_host
from agent.store import Store
from agent.store.memory import MemoryStore
from agent.sync import SyncEngine, SyncResult

SOURCE = "contract"
OWNER = "owner@example.com"

#: Attachment names a hostile sender might use; ``{t}`` becomes a per-test token.
HOSTILE_NAMES: tuple[str, ...] = (
    "../../../retainer-evil-{t}.txt",
    "/tmp/retainer-evil-{t}-abs.txt",
    "..\\..\\retainer-evil-{t}-win.txt",
    "sub/../../retainer-evil-{t}-mid.txt",
    ".retainer-evil-{t}-dot",
    "retainer-evil-{t}-\u202etxt.exe",
    "CON",
)


class RemoteFixture(ABC):
    """The remote side of one source, as the contract tests drive it.

    Subclasses set :attr:`plugin` and :attr:`platform` and implement the methods below.
    Every message added must come from :attr:`contractor` (so its files are downloaded).
    """

    #: The plugin object (usually the module) whose ``register_platforms`` provides the platform.
    plugin: ClassVar[object]
    #: The platform name the plugin registers.
    platform: ClassVar[str]
    #: The contractor who writes every message, as a ``[[contractors]]`` table.
    contractor: ClassVar[dict[str, Any]] = {"name": "Maria Lopez", "emails": ["maria@example.com"]}

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The source's ``[sources.settings]`` table. Use a small page size (2 or 3)."""

    @abstractmethod
    def add_message(self, text: str) -> None:
        """Add one message whose body contains ``text``; the next sync must store exactly it."""

    def prepare(self, state_dir: Path) -> None:  # noqa: B027 (optional, empty by default)
        """Set up the source's plugin state before the first sync (e.g. save OAuth tokens
        into ``state_dir``, the folder ``SourceContext.state_dir`` will name)."""

    def add_attachment(self, filename: str, data: bytes) -> bytes | None:
        """Add one message carrying one file called ``filename`` holding ``data``.

        Return the bytes the remote will serve if it cannot serve ``data`` as given.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot add files; "
                                  "set test_hostile_attachment_names_are_sanitized = None")

    def break_auth(self) -> None:
        """Make the remote side refuse the credentials from now on."""
        raise NotImplementedError(f"{type(self).__name__} cannot refuse credentials; "
                                  "set test_auth_failure_is_auth_error = None")

    def break_transiently(self) -> None:
        """Make the remote side fail in a way worth retrying (HTTP 503, a dropped connection)."""
        raise NotImplementedError(f"{type(self).__name__} cannot fail transiently; "
                                  "set test_transient_failure_is_transient_error = None")


@dataclass
class Event:
    """One write the engine made, in order: a page of records or a cursor."""

    kind: str  # "records" or "cursor"
    source: str
    ids: tuple[str, ...] = ()
    cursor: dict[str, Any] | None = None


class ObservingStore(Store):
    """The real store, noting the order of its writes (records, then cursors)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.events: list[Event] = []

    def commit_page(self, source: str, platform: str, records: Sequence[Record], *,
                    owner_keys: frozenset[str] = frozenset()) -> Any:
        result = super().commit_page(source, platform, records, owner_keys=owner_keys)
        self.events.append(Event("records", source, tuple(record_key(r) for r in records)))
        return result

    def update_source_state(self, source: str, **changes: Any) -> None:
        super().update_source_state(source, **changes)
        if "cursor" in changes:
            self.events.append(Event("cursor", source, cursor=dict(changes["cursor"] or {})))


def record_key(record: object) -> str:
    """``"Message:<remote_id>"``: a record's identity within one source."""
    return f"{type(record).__name__}:{getattr(record, 'remote_id', '?')}"


@dataclass
class Harness:
    """One configured source over a remote fixture, a real store and the sync engine."""

    remote: RemoteFixture
    data_dir: Path
    host: PluginHost
    store: ObservingStore
    config: Config
    results: list[SyncResult] = field(default_factory=list)

    @classmethod
    def build(cls, remote: RemoteFixture, data_dir: Path) -> Harness:
        host = make_plugin_host(entrypoints=False, strict=True, extra=[remote.plugin])
        host.platform(remote.platform)  # a clear error if the plugin does not provide it
        config = Config(
            path=data_dir.parent / "config.toml",
            # every record enters the queue, whatever its date (no first-import cut-off)
            agent=AgentSection(data_dir=data_dir, owner_emails=[OWNER], review_since=False),
            contractors=[ContractorSeed.model_validate(remote.contractor)],
            sources=[SourceConfig(name=SOURCE, platform=remote.platform, settings=remote.settings())],
        )
        store = ObservingStore(data_dir)
        remote.prepare(store.source_dir(SOURCE))
        return cls(remote, data_dir, host, store, config)

    @property
    def source(self) -> SourceConfig:
        return self.config.sources[0]

    def engine(self, should_stop: Callable[[], bool] = lambda: False) -> SyncEngine:
        return SyncEngine(self.config, self.host, self.store, should_stop=should_stop)

    def sync(self, *, ok: bool = True, should_stop: Callable[[], bool] = lambda: False
             ) -> SyncResult:
        """Run one sync the way ``retainer sync`` does; fail the test if ``ok`` is not met."""
        engine = self.engine(should_stop)
        engine.prepare()
        result = engine.sync_source(self.source)
        self.results.append(result)
        if ok and not result.ok:
            pytest.fail(f"sync failed ({result.error_kind}): {result.error}")
        return result

    def connector(self) -> Connector[Any]:
        platform = self.host.platform(self.remote.platform)
        settings = platform.settings.model_validate(self.source.settings)
        return platform.connector(settings, self.engine().context_for(self.source))

    def fetch(self, cursor: Cursor, each: Callable[[Page], None] | None = None) -> list[Page]:
        """All pages a fresh connector yields from ``cursor`` (bypassing the store).

        ``each`` sees every page as it is yielded, while its attachment files (which the
        connector may remove once the next page is asked for) still exist.
        """
        connector = self.connector()
        pages: list[Page] = []
        try:
            for page in connector.fetch(cursor):
                if each is not None:
                    each(page)
                pages.append(page)
        finally:
            connector.close()
        return pages

    def cursor(self) -> dict[str, Any]:
        return dict(self.store.source_state(SOURCE).get("cursor") or {})

    def messages(self) -> list[MessageRecord]:
        return self.store.messages(source=SOURCE)

    def texts(self) -> list[str]:
        return [m.get("text") or "" for m in self.messages()]

    def deliverables(self) -> list[DeliverableRecord]:
        return [d for d in self.store.deliverables() if d["source"] == SOURCE]


def _json_cursor(cursor: Cursor | None) -> str | None:
    return check_cursor(cursor)


class ConnectorContract:
    """What every source must do. Subclass it and override the ``remote`` fixture.

    :attr:`initial` messages are added before the first sync; with the small page size
    the remote fixture configures, they must span at least :attr:`min_pages` pages.
    """

    initial: ClassVar[int] = 5
    min_pages: ClassVar[int] = 2

    @pytest.fixture
    def remote(self) -> RemoteFixture:
        raise NotImplementedError("override the `remote` fixture to return a RemoteFixture")

    @pytest.fixture
    def harness(self, remote: RemoteFixture, tmp_path: Path) -> Harness:
        data = tmp_path / "retainer-data"
        data.mkdir()
        return Harness.build(remote, data)

    @pytest.fixture
    def token(self) -> str:
        return uuid.uuid4().hex[:10]

    def add(self, harness: Harness, token: str, start: int, count: int) -> list[str]:
        texts = [f"contract message {i} {token}" for i in range(start, start + count)]
        for text in texts:
            harness.remote.add_message(text)
        return texts

    # -- syncing ---------------------------------------------------------------------

    def test_first_sync_stores_every_message(self, harness: Harness, token: str) -> None:
        texts = self.add(harness, token, 0, self.initial)
        result = harness.sync()
        assert result.messages_new == self.initial, result
        stored = harness.texts()
        for text in texts:
            assert sum(text in s for s in stored) == 1, f"{text!r} stored {stored!r}"
        assert result.pages >= self.min_pages, (
            f"{self.initial} messages came in {result.pages} page(s); configure a page size "
            f"in the remote fixture's settings so they take at least {self.min_pages}")

    def test_noop_sync_stores_nothing_new(self, harness: Harness, token: str) -> None:
        self.add(harness, token, 0, self.initial)
        harness.sync()
        first = [e for e in harness.store.events if e.kind == "records"]
        before = len(harness.messages())
        mark = len(harness.store.events)
        again = harness.sync()
        assert (again.messages_new, again.messages_updated, again.deliverables_new) == (0, 0, 0)
        assert len(harness.messages()) == before
        repeated = [e for e in harness.store.events[mark:] if e.kind == "records"]
        largest = max(len(e.ids) for e in first)
        assert sum(len(e.ids) for e in repeated) <= largest, (
            "a sync with nothing new fetched everything again; use the cursor")

    def test_incremental_sync_after_remote_additions(self, harness: Harness, token: str) -> None:
        self.add(harness, token, 0, self.initial)
        harness.sync()
        later = self.add(harness, token, 100, 2)
        result = harness.sync()
        assert result.messages_new == 2, result
        assert len(harness.messages()) == self.initial + 2
        stored = harness.texts()
        assert all(any(t in s for s in stored) for t in later)

    def test_cursor_committed_after_records_and_moves_forward(
            self, harness: Harness, token: str) -> None:
        self.add(harness, token, 0, self.initial)
        harness.sync()
        events = [e for e in harness.store.events if e.source == SOURCE]
        assert any(e.kind == "cursor" for e in events), "no cursor was ever committed"
        pages: list[tuple[str, ...]] = []
        cursors: list[dict[str, Any]] = []
        for i, event in enumerate(events):
            if event.kind == "cursor":
                assert i > 0 and events[i - 1].kind == "records", (
                    "a cursor was committed before its page's records were stored")
                pages.append(events[i - 1].ids)
                cursors.append(event.cursor or {})
                assert _json_cursor(event.cursor) is None, _json_cursor(event.cursor)
        assert cursors[-1], "the last committed cursor is empty: the next sync would start over"
        # Resuming from each committed cursor must yield every later page and no earlier one.
        for i, cursor in enumerate(cursors):
            again = {record_key(r) for p in harness.fetch(cursor) for r in p.records}
            earlier = set().union(*pages[:i]) - set(pages[i]) if i else set()
            later = set().union(*pages[i + 1:]) if i + 1 < len(pages) else set()
            assert not again & earlier, f"cursor {i} moved backwards: {sorted(again & earlier)}"
            assert later <= again, f"cursor {i} skipped records: {sorted(later - again)}"

    def test_refetch_is_idempotent(self, harness: Harness, token: str) -> None:
        self.add(harness, token, 0, self.initial)
        harness.sync()
        before = sorted(m["id"] for m in harness.messages())
        with harness.store.writing():
            harness.store.update_source_state(SOURCE, cursor={})
        result = harness.sync()
        assert (result.messages_new, result.deliverables_new) == (0, 0), result
        assert sorted(m["id"] for m in harness.messages()) == before

    def test_interrupted_sync_resumes_without_loss_or_duplicates(
            self, harness: Harness, token: str) -> None:
        texts = self.add(harness, token, 0, self.initial)
        first = harness.sync(should_stop=lambda: any(
            e.kind == "records" for e in harness.store.events))
        assert first.stopped and first.pages == 1, first
        assert len(harness.messages()) < self.initial, "the first page held every message"
        harness.sync()
        stored = harness.texts()
        assert len(stored) == self.initial, stored
        for text in texts:
            assert sum(text in s for s in stored) == 1, f"{text!r} in {stored!r}"

    # -- failures ----------------------------------------------------------------------

    def test_auth_failure_is_auth_error(self, harness: Harness, token: str) -> None:
        self.add(harness, token, 0, self.initial)
        harness.sync()
        cursor = harness.cursor()
        harness.remote.break_auth()
        self.add(harness, token, 100, 1)
        result = harness.sync(ok=False)
        assert (result.ok, result.error_kind) == (False, "auth"), result
        assert harness.cursor() == cursor

    def test_transient_failure_is_transient_error(self, harness: Harness, token: str) -> None:
        self.add(harness, token, 0, self.initial)
        harness.sync()
        cursor = harness.cursor()
        harness.remote.break_transiently()
        self.add(harness, token, 100, 1)
        result = harness.sync(ok=False)
        assert not result.ok
        assert result.error_kind in ("transient", "rate_limited"), result
        assert harness.cursor() == cursor

    # -- files and records ---------------------------------------------------------------

    def test_hostile_attachment_names_are_sanitized(self, harness: Harness, token: str,
                                                    tmp_path: Path) -> None:
        names = [n.format(t=token) for n in HOSTILE_NAMES]
        harness.sync()  # whatever the remote holds already (seeded work) is not counted
        before = {d["id"] for d in harness.deliverables()}
        payloads = {name: f"{token} payload {i}\n".encode() for i, name in enumerate(names)}
        for name, data in payloads.items():
            payloads[name] = harness.remote.add_attachment(name, data) or data
        # the remote fixture's own files (a fake platform's folder) may carry the names
        already = {p for p in tmp_path.rglob(f"*evil-{token}*") if p.is_file()}
        harness.sync()
        files = harness.data_dir / "files"
        stored = [d for d in harness.deliverables() if d["id"] not in before]
        assert len(stored) == len(names), [d["filename"] for d in stored]
        for doc in stored:
            name = doc["filename"]
            assert name and "/" not in name and "\\" not in name and not name.startswith("."), name
            assert "\u202e" not in name and name not in (".", ".."), name
            assert doc["path"] is not None, doc  # a stored file has a path
            path = Path(doc["path"]).resolve()
            assert path.parent == files.resolve(), path
            assert path.read_bytes() in payloads.values()
        assert sorted(Path(d["path"] or "").read_bytes() for d in stored) == sorted(
            payloads.values())
        outside = [p for p in tmp_path.rglob(f"*evil-{token}*")
                   if harness.data_dir not in p.parents and p.is_file() and p not in already]
        outside += [p for p in Path("/tmp").glob(f"retainer-evil-{token}*")]
        assert not outside, f"files written outside the data folder: {outside}"

    def test_records_are_well_formed(self, harness: Harness, token: str) -> None:
        self.add(harness, token, 0, self.initial)
        try:
            harness.remote.add_attachment("report.pdf", b"%PDF-1.4 " + token.encode())
        except NotImplementedError:
            pass  # a platform without files
        harness.sync()  # seeds the roster, so the attachment is downloaded
        problems: list[str] = []

        def check(page: Page) -> None:
            if not isinstance(page, Page):
                problems.append(f"fetch yielded {type(page).__name__}, not an agent.models.Page")
                return
            problems.extend(check_records(page.records))
            cursor_problem = _json_cursor(page.cursor)
            if cursor_problem:
                problems.append(cursor_problem)

        pages = harness.fetch({}, check)
        records = [r for p in pages for r in p.records]
        assert records, "a fetch from an empty cursor yielded nothing"
        problems += [p for p in check_records(records) if "repeats" in p]
        assert not problems, "\n".join(dict.fromkeys(problems))


# -- one sync, for a plugin's own tests ------------------------------------------------------


@dataclass
class Synced:
    """What :func:`run_sync` did: the sync's result and the store it wrote."""

    result: SyncResult
    store: Store
    source: str

    def messages(self) -> list[MessageRecord]:
        """The source's stored messages, newest first, as ``retainer messages --json`` prints."""
        return self.store.messages(source=self.source)

    def deliverables(self) -> list[DeliverableRecord]:
        """The source's stored deliverables, oldest first."""
        return [d for d in self.store.deliverables() if d["source"] == self.source]

    def contractors(self) -> list[ContractorRecord]:
        return self.store.contractors()

    def candidates(self) -> list[IdentityRecord]:
        return self.store.candidates()

    @property
    def cursor(self) -> dict[str, Any]:
        return dict(self.store.source_state(self.source).get("cursor") or {})


def run_sync(
    plugin: object,
    settings: dict[str, Any],
    data_dir: Path,
    *,
    platform: str | None = None,
    contractors: Sequence[dict[str, Any]] = (RemoteFixture.contractor,),
    owner_emails: Sequence[str] = (OWNER,),
    source: str = "test",
    should_stop: Callable[[], bool] = lambda: False,
) -> Synced:
    """Run one real sync of ``plugin``'s platform into ``data_dir``, as ``retainer sync`` does.

    :param plugin: the object with the ``@hookimpl`` functions (usually the module).
    :param settings: the source's ``[sources.settings]`` table, validated as in a config.
    :param data_dir: the data folder; call again with the same one for the next sync
        (it resumes from the committed cursor).
    :param platform: the platform to sync; may be left out when the plugin has one.
    :param contractors: ``[[contractors]]`` tables to seed the roster with.

    The host is strict: a plugin error raises with its traceback, a bad page raises
    :class:`~agent.errors.PluginError`. Refused credentials and transient failures are
    reported in ``result`` (``result.ok``, ``result.error_kind``), as in production.
    """
    host = make_plugin_host(entrypoints=False, strict=True, extra=[plugin])
    if platform is None:
        mine = [name for name, owner in host.platform_owner.items()
                if host.pm.get_plugin(owner) is plugin]
        if len(mine) != 1:
            raise ValueError(f"the plugin provides {len(mine)} platforms ({', '.join(mine)}); "
                             "pass platform=")
        platform = mine[0]
    config = Config(
        path=data_dir.parent / "config.toml",
        agent=AgentSection(data_dir=data_dir, owner_emails=list(owner_emails),
                           review_since=False),  # every record enters the queue
        contractors=[ContractorSeed.model_validate(c) for c in contractors],
        sources=[SourceConfig(name=source, platform=platform, settings=settings)],
    )
    config.settings[source] = host.platform(platform).settings.model_validate(
        settings, context={"check_paths": True})  # as when read from a config file
    store = Store(data_dir)
    engine = SyncEngine(config, host, store, should_stop=should_stop)
    engine.prepare()
    return Synced(engine.sync_source(config.sources[0]), store, source)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def plugin_host() -> PluginHost:
    """A fresh, strict plugin host that loads no entry points; add plugins with ``.add()``."""
    return make_plugin_host(entrypoints=False, strict=True)


@pytest.fixture
def memory_store(tmp_path: Path) -> Iterator[MemoryStore]:
    """A store whose tables live in memory (files go under ``tmp_path``)."""
    yield MemoryStore(tmp_path / "retainer-data")


__all__ = [
    "HOSTILE_NAMES",
    "ConnectorContract",
    "Event",
    "Harness",
    "ObservingStore",
    "RemoteFixture",
    "Synced",
    "check_records",
    "memory_store",
    "plugin_host",
    "run_sync",
]
