"""The sync engine: one source at a time, page by page, records before cursors.

For each page a connector yields, the engine stores the records, then commits the page's
cursor, under the store's write lock. A crash between the two only means the page is
fetched again next time, and the idempotent upsert absorbs the repeat.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, SecretStr

from agent.config import Config, SourceConfig
from agent.connector import Connector, SourceContext, check_page
from agent.errors import AuthError, PluginError, RetainerError, SourceError, TransientError
from agent.locks import FileLock, LockTimeout
from agent.mailformats import apply_formats
from agent.models import Identity, Record
from agent.plugins import PluginHost
from agent.store import Store
from agent.store.core import iso
from agent.store.pluginstate import PluginState
from agent.syncresult import StoredBatch as StoredBatch
from agent.syncresult import SyncResult as SyncResult

log = logging.getLogger("retainer.sync")

ProgressCallback = Callable[[str, int, int], None]
#: Called after each committed page with the source's running result and the page's
#: ``progress`` (done, total) if the connector gave one: the command line's ``-v`` lines,
#: its progress bar and its account of what a Ctrl-C kept.
PageCallback = Callable[["SyncResult", "tuple[int, int] | None"], None]


def secret_values(settings: BaseModel | None) -> list[str]:
    """Every resolved secret in a settings model, to scrub from error text."""
    found: list[str] = []
    if settings is None:
        return found
    for value in settings.__dict__.values():
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if len(secret) >= 4:
                found.append(secret)
        elif isinstance(value, BaseModel):
            found.extend(secret_values(value))
    return found


def redact(text: str, secrets: Iterable[str]) -> str:
    from agent.secrets import scrub

    for secret in secrets:
        text = text.replace(secret, "***")
    return scrub(text)


class SyncEngine:
    """Runs syncs for a loaded config against a store, with the plugins of ``host``."""

    def __init__(
        self,
        config: Config,
        host: PluginHost,
        store: Store,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        progress: ProgressCallback | None = None,
        on_page: PageCallback | None = None,
        quick_env: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.store = store
        self.should_stop = should_stop
        self.progress = progress
        self.on_page = on_page
        self.owner_keys = frozenset(f"email:{e}" for e in config.agent.owner_emails)
        self._plugin_states: dict[str, PluginState] = {}
        #: per source, what the quick check compares besides the connector's stamps
        #: (:func:`agent.quicksync.environment`, taken before the sync); without it (the
        #: daemon) no quick record is kept, and each sync forgets the one there was
        self.quick_env = quick_env or {}
        self._quick_stamps: dict[str, dict[str, list[int]] | None] = {}

    def prepare(self) -> None:
        """Seed the roster from the config (idempotent) and fix the first-import cut-off."""
        if self.config.contractors:
            with self.store.writing():
                self.store.seed_contractors(self.config.contractors)
        since = self.config.agent.review_since
        if since is None:  # default: the day of the first sync, recorded once
            recorded = self.store.first_sync_day()
            if recorded is None:
                with self.store.writing():
                    recorded = self.store.record_first_sync_day(
                        datetime.now(UTC).date().isoformat())
            day = recorded
        else:  # an explicit date wins; `false`: everything enters the queue
            day = since.isoformat() if since else ""
        if day != self.store.review_since():
            with self.store.writing():
                self.store.set_review_since(day)

    def sync_all(self, names: Sequence[str] = ()) -> list[SyncResult]:
        sources = [self.config.source(n) for n in names] if names else [
            s for s in self.config.sources if s.enabled
        ]
        self.prepare()
        results = []
        for source in sources:
            if self.should_stop():
                break
            results.append(self.sync_source(source))
        return results

    def context_for(self, source: SourceConfig, *, syncing: bool = False) -> SourceContext:
        """The connector's context. Only a sync (which holds the source's sync lock) gets
        the source's scratch folder, emptied of what a killed sync left; anything else
        (sending a reply, a test) gets a folder of its own, so it never touches the files
        of a sync running at the same time."""
        if syncing:
            scratch = self.store.scratch_dir(source.name)
        else:
            from agent.files import ensure_private_dir, sanitize_filename

            scratch = ensure_private_dir(self.store.tmp_dir / ".outside-sync"
                                         / sanitize_filename(source.name))
        roster = self.store.roster()
        owner_keys = self.owner_keys

        def is_owner(identity: Identity) -> bool:
            return identity.key in owner_keys

        state = self.store.plugin_state(source.name)
        self._plugin_states[source.name] = state
        return SourceContext(
            state=MappingProxyType(state.state),
            source=source.name,
            platform=source.platform,
            state_dir=self.store.source_dir(source.name),
            scratch_dir=scratch,
            max_attachment_bytes=int(self.config.agent.max_attachment_mb * 1024 * 1024),
            is_owner=is_owner,
            wants_attachments=roster.is_contractor,
            should_stop=self.should_stop,
            log=logging.getLogger(f"retainer.plugins.{source.platform}"),
            options=dict(self.config.plugins.get(source.platform, {})),
            refetch=self.store.backfill_locators(source.name),
        )

    def sync_source(self, source: SourceConfig) -> SyncResult:
        """Sync one source; never raises for source failures (see ``SyncResult.error``)."""
        result = SyncResult(source=source.name, platform=source.platform)
        started = time.monotonic()
        settings = self.config.settings.get(source.name)
        secrets = secret_values(settings)
        lock = FileLock(self.store.source_dir(source.name) / "sync.lock", timeout=0, mode=0o600)
        try:
            lock.acquire()
        except LockTimeout:
            result.ok = False
            result.error_kind = "transient"
            result.error = ("another Retainer process is syncing this source right now "
                            "(the daemon?); try again when it has finished")
            return self._finish(result, started)
        try:
            from agent.diskspace import ensure_reserve

            ensure_reserve(self.store.data_dir)
            self._run(source, settings, result, secrets)
        except RetainerError as exc:
            if self.host.strict and not isinstance(exc, TransientError | AuthError):
                raise  # --strict: plugin authors see the traceback
            result.ok = False
            result.error = redact(str(exc), secrets)
            result.error_kind = _kind(exc)
            result.retry_after = getattr(exc, "retry_after", None)
        except OSError as exc:
            if self.host.strict and exc.errno not in _NO_SPACE:
                raise  # --strict: plugin authors see the traceback
            result.ok = False
            result.error_kind = "transient" if exc.errno in _NO_SPACE else "error"
            result.error = redact(
                f"no space left in {self.store.data_dir}; free some disk space: the next "
                "sync goes on from the last committed page" if exc.errno in _NO_SPACE else
                f"unexpected {type(exc).__name__}: {exc} (a bug in the plugin, or a problem "
                "with the disk; run with -v for details)", secrets)
            log.debug("traceback for %s", source.name, exc_info=True)
        except Exception as exc:  # a plugin bug must not take the daemon down
            if self.host.strict:
                raise  # --strict: plugin authors see the traceback
            result.ok = False
            result.error = redact(f"unexpected {type(exc).__name__}: {exc} "
                                  "(a bug in the plugin; run with -v for details)", secrets)
            result.error_kind = "error"
            log.debug("traceback for %s", source.name, exc_info=True)
        finally:
            lock.release()
        owner = self.host.platform_owner.get(source.platform)
        if owner and result.error_kind == "error" and f'plugin "{owner}"' not in result.error:
            result.error += f' (platform "{source.platform}" comes from plugin "{owner}")'
        return self._finish(result, started)

    def _run(self, source: SourceConfig, settings: BaseModel | None, result: SyncResult,
             secrets: list[str]) -> None:
        platform = self.host.platform(source.platform)
        if settings is None:  # a disabled source, synced by name
            settings = platform.settings.model_validate(source.settings)
            secrets.extend(secret_values(settings))  # redact its errors too
        context = self.context_for(source, syncing=True)
        plugin_state = self._plugin_states.pop(source.name)
        connector: Connector[Any] = platform.connector(settings, context)
        reads_mail = bool(getattr(connector, "reads_mail", False))
        from agent import announce

        self._announce_left_behind(source)
        cursor = self.store.source_state(source.name).get("cursor") or {}
        journal = False
        backfill = bool(self.store.source_state(source.name).get("backfill"))
        try:
            for page in connector.fetch(cursor):
                self._check(source, page, result.pages)
                records: Sequence[Record] = page.records
                if reads_mail and self.host.mail_formats:
                    records = apply_formats(self.host.mail_formats, records, source.name)
                with self.store.writing():
                    self.store.update_source_state(  # see agent.announce
                        source.name, pending=announce.committing(self.store, source.name, records))
                    journal = True
                    committed = self.store.commit_page(
                        source.name, source.platform, records, owner_keys=self.owner_keys
                    )
                    if page.state:  # after the records, before the cursor
                        plugin_state.commit(page.state)
                    changes: dict[str, Any] = {"pending": announce.announcing(committed)}
                    if page.cursor is not None:
                        changes["cursor"] = dict(page.cursor)
                    self.store.update_source_state(source.name, **changes)
                result.pages += 1
                connector.committed(page)
                result.messages_new += committed.messages_new
                result.messages_updated += committed.messages_updated
                result.deliverables_new += committed.deliverables_new
                if committed.messages or committed.deliverables:
                    self.host.call_each("records_stored", batch=StoredBatch(
                        source.name, committed.messages, committed.deliverables))
                if self.progress is not None and page.progress is not None:
                    self.progress(source.name, *page.progress)
                if self.on_page is not None:
                    self.on_page(result, page.progress)
                if self.should_stop():
                    result.stopped = True
                    break
            if journal:
                with self.store.writing():
                    self.store.update_source_state(source.name, pending=None)
            if backfill and not result.stopped:
                with self.store.writing():  # the promoted senders' earlier files are in
                    self.store.update_source_state(source.name, backfill=[])
        finally:
            connector.close()
            result.warnings = list(dict.fromkeys(context.warnings))[:20]
            self._quick_stamps[source.name] = context.quick_stamps()

    def _check(self, source: SourceConfig, page: object, index: int) -> None:
        """Refuse a malformed page before anything of it is stored (in every mode)."""
        problems = check_page(page)
        if problems:
            owner = self.host.platform_owner.get(source.platform, "?")
            shown = "; ".join(dict.fromkeys(problems[:5]))
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise PluginError(
                f'plugin "{owner}" (platform "{source.platform}") yielded a bad page '
                f"(page {index + 1}): {shown}{more}; nothing of it was stored. "
                "Fix the plugin (its contract tests show the same), or disable it with "
                f"RETAINER_DISABLE_PLUGINS={owner}")

    def _announce_left_behind(self, source: SourceConfig) -> None:
        """Announce what an interrupted sync of ``source`` committed but never announced."""
        from agent import announce

        pending = self.store.source_state(source.name).get("pending")
        if not pending:
            return
        messages, deliverables = announce.left_behind(self.store, pending)
        if messages or deliverables:
            log.info("%s: announcing %d messages and %d deliverables an interrupted sync "
                     "stored", source.name, len(messages), len(deliverables))
            self.host.call_each("records_stored", batch=StoredBatch(
                source.name, messages, deliverables))
        with self.store.writing():
            self.store.update_source_state(source.name, pending=None)

    def _finish(self, result: SyncResult, started: float) -> SyncResult:
        result.duration = time.monotonic() - started
        if result.error.startswith(f"{result.source}: "):  # shown beside the source's name:
            result.error = result.error[len(result.source) + 2:]  # never "inbox: inbox: ..."
        now = iso(datetime.now(UTC))
        changes: dict[str, Any] = {"last_attempt": now, "last_duration": round(result.duration, 3),
                                   "platform": result.platform, "warnings": result.warnings}
        if result.ok:
            changes.update(last_success=now, failures=0, last_error=None, error_kind=None)
        else:
            state = self.store.source_state(result.source)
            changes.update(last_error=result.error, last_error_at=now, error_kind=result.error_kind,
                           failures=state.get("failures", 0) + 1)
            log.error("%s: %s", result.source, result.error)
        from agent.diskspace import release_reserve

        for attempt in (1, 2):
            try:
                with self.store.writing():
                    self.store.update_source_state(result.source, **changes)
                    self._keep_quick(result)
                break
            except RetainerError as exc:
                if (attempt == 1 and "no space left" in str(exc)
                        and release_reserve(self.store.data_dir)):
                    continue  # the reserve made room for this one write
                log.error("%s: could not record the sync result: %s", result.source, exc)
                break
        if result.messages_new or result.messages_updated or result.deliverables_new:
            self._refresh_read_models(result.source)
        self.host.call_each("source_synced", result=result)
        return result

    def _keep_quick(self, result: SyncResult) -> None:
        """Inside :meth:`_finish`'s write: after a complete, clean sync keep what the next
        ``retainer sync`` compares to skip this source (:mod:`agent.quicksync`); after any
        other, forget what there was. The record checks itself against the source's
        state (no failure, nothing pending, the same cursor), so a sync that fails,
        stops or is killed later, or runs beside this one, makes it useless. Derived:
        a failure to write it only logs."""
        source = result.source
        stamps = self._quick_stamps.pop(source, None)
        env = self.quick_env.get(source)
        state = self.store.source_state(source)
        try:
            if (stamps is None or env is None or not result.ok or result.stopped
                    or result.warnings or state.get("pending") or state.get("backfill")):
                if self.store.quick_record(source) is not None:
                    self.store.save_quick_record(source, None)
                return
            from agent.quicksync import cursor_hash

            # the roster as this sync left it (with its new senders): a promotion since
            # changes it, one during the sync left a backfill pending (above)
            self.store.save_quick_record(source, {
                "env": dict(env, roster=self.store.roster_stamp()), "stamps": stamps,
                "cursor": cursor_hash(state.get("cursor"))})
        except OSError as exc:
            log.debug("%s: quick-check record not kept: %s", source, exc)

    def _refresh_read_models(self, source: str) -> None:
        """Rebuild, now, the read models a new page made stale, so the next listing finds
        them fresh (derived data: a failure here only leaves the next read slower)."""
        from agent.stats import refresh_read_models

        try:
            refresh_read_models(self.store)
        except Exception as exc:  # never fail a committed sync over a cache
            log.warning("%s: read models not refreshed (the next listing rebuilds them): "
                        "%s: %s", source, type(exc).__name__, exc)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _kind(exc: Exception) -> str:
    from agent.errors import NoSpace, RateLimited

    if isinstance(exc, AuthError):
        return "auth"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, TransientError | NoSpace):
        return "transient"
    if isinstance(exc, SourceError):
        return "error"
    return "error"
