from __future__ import annotations

import errno
import json
import logging
import secrets as secrets_module
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from filelock import FileLock
from pydantic import BaseModel, SecretStr

import tests.support.feed as feed
from agent import Attachment, Connector, Identity, Message, Page, Platform, Settings
from agent.config import load_config
from agent.connector import SourceContext, check_page
from agent.errors import AuthError, RateLimited, SourceError, StoreError, TransientError
from agent.mailformats import MailFormat
from agent.models import Cursor
from agent.plugins import hookimpl, make_plugin_host
from agent.secrets import Secret, known_secrets
from agent.store import Store
from agent.sync import SyncEngine, SyncResult, redact, secret_values
from tests.support import fsspy

ITEMS = [
    {"id": f"<{i}@x>", "from": "maria@example.com", "name": "Maria", "subject": f"logo v{i}",
     "text": "here you go", "thread": "<t@x>",
     "attachments": [{"name": f"logo-{i}.png", "data": f"png-{i}"}]}
    for i in range(7)
]


def make_config(tmp_path: Path, **settings) -> Path:
    extra = "".join(f"{k} = {v!r}\n" for k, v in settings.items()).replace("'", '"')
    path = tmp_path / "config.toml"
    path.write_text(f"""
[agent]
data_dir = "{tmp_path}/data"
owner_emails = ["owner@example.com"]
review_since = false  # the feed's work is dated before today: all of it is queued
[[contractors]]
name = "Maria Lopez"
emails = ["maria@example.com"]
[[sources]]
name = "feed"
platform = "feed"
[sources.settings]
path = "{tmp_path}/feed.jsonl"
{extra}
[[sources]]
name = "other"
platform = "feed"
[sources.settings]
path = "{tmp_path}/other.jsonl"
""")
    feed.write_feed(tmp_path / "feed.jsonl", ITEMS)
    feed.write_feed(tmp_path / "other.jsonl", [
        {"id": "<o@x>", "from": "news@shop.example", "subject": "Sale!"}])
    return path


class Recorder:
    def __init__(self) -> None:
        self.batches: list = []
        self.results: list = []

    @hookimpl
    def records_stored(self, batch):
        self.batches.append(batch)

    @hookimpl
    def source_synced(self, result):
        self.results.append(result)


def engine_for(tmp_path, *plugins, **settings):
    host = make_plugin_host(entrypoints=False, extra=[feed, *plugins])
    config = load_config(make_config(tmp_path, **settings), host)
    return SyncEngine(config, host, Store(config.data_dir))


def test_first_noop_and_incremental_sync(tmp_path):
    engine = engine_for(tmp_path)
    first = engine.sync_all()
    assert [r.ok for r in first] == [True, True]
    assert first[0].messages_new == 7 and first[0].pages == 3 and first[0].deliverables_new == 7
    noop = engine.sync_all(["feed"])[0]
    assert noop.messages_new == 0 and noop.pages == 0
    feed.write_feed(tmp_path / "feed.jsonl", [dict(ITEMS[0], id="<new@x>")], append=True)
    incr = engine.sync_all(["feed"])[0]
    assert incr.messages_new == 1
    assert len(engine.store.messages(source="feed")) == 8
    assert engine.store.source_state("feed")["cursor"] == {"offset": 8}


def test_hook_records_stored_and_source_synced(tmp_path):
    recorder = Recorder()
    engine = engine_for(tmp_path, recorder)
    engine.sync_all(["feed"])
    assert sum(len(b.messages) for b in recorder.batches) == 7
    assert sum(len(b.deliverables) for b in recorder.batches) == 7
    assert [r.source for r in recorder.results] == ["feed"]
    engine.sync_all(["feed"])
    assert sum(len(b.messages) for b in recorder.batches) == 7  # nothing new, no event


def test_failing_event_plugin_does_not_fail_sync(tmp_path):
    class Broken:
        @hookimpl
        def records_stored(self, batch):
            raise RuntimeError("notifier down")

    engine = engine_for(tmp_path, Broken())
    assert engine.sync_all(["feed"])[0].ok


@pytest.mark.parametrize(("kind", "expected"), [("auth", "auth"), ("transient", "transient"),
                                                ("crash", "error")])
def test_failure_keeps_committed_pages_and_other_sources(tmp_path, kind, expected):
    engine = engine_for(tmp_path, fail=kind, fail_after_pages=1)
    results = {r.source: r for r in engine.sync_all()}
    assert not results["feed"].ok and results["feed"].error_kind == expected
    assert results["other"].ok
    assert len(engine.store.messages(source="feed")) == 3  # the committed first page stays
    state = engine.store.source_state("feed")
    assert state["cursor"] == {"offset": 3} and state["failures"] == 1
    assert state["last_error"] == results["feed"].error == FEED_ERRORS[kind]
    assert state["error_kind"] == expected and state["last_error_at"] == state["last_attempt"]
    assert "last_success" not in state
    assert engine.store.source_state("other")["failures"] == 0


FEED_ERRORS = {
    "auth": "the feed refused the token; set a new one in settings.token",
    "transient": "the feed is down (503); will retry",
    "crash": 'unexpected RuntimeError: boom (a bug in the plugin; run with -v for details) '
             '(platform "feed" comes from plugin "tests.support.feed")',
}


def test_stop_request_finishes_page_and_resumes(tmp_path):
    engine = engine_for(tmp_path)
    engine.should_stop = lambda: True
    result = engine.sync_source(engine.config.source("feed"))
    assert result.stopped and result.messages_new == 3
    engine.should_stop = lambda: False
    assert engine.sync_all(["feed"])[0].messages_new == 4
    ids = [m["remote_id"] for m in engine.store.messages(source="feed")]
    assert len(ids) == len(set(ids)) == 7


def test_refetch_from_scratch_is_idempotent(tmp_path):
    engine = engine_for(tmp_path)
    engine.sync_all(["feed"])
    with engine.store.writing():
        engine.store.update_source_state("feed", cursor={})
    again = engine.sync_all(["feed"])[0]
    assert again.messages_new == 0 and again.deliverables_new == 0
    assert len(engine.store.deliverables()) == 7


def test_secret_values_are_redacted_from_errors():
    class Inner(BaseModel):
        key: SecretStr

    class Outer(BaseModel):
        token: SecretStr
        short: SecretStr
        inner: Inner
        plain: str

    settings = Outer(token=SecretStr(CANARY), short=SecretStr("abc"),
                     inner=Inner(key=SecretStr("Kp3v9")), plain="visible")
    found = secret_values(settings)
    assert found == [CANARY, "Kp3v9"]  # nested models too; shorter than 4 is not a secret
    assert secret_values(None) == []
    text = f"login failed for {CANARY} with Kp3v9, again {CANARY}; visible"
    assert redact(text, found) == "login failed for *** with ***, again ***; visible"



# -- a probe platform: pages of mail from a contractor, failures on demand ---------------

CANARY = "Wq7z"  # four characters: the shortest value treated as a secret
CANARY_2 = "Kp3v"
CLOSED: list[str] = []
CONTEXTS: list[SourceContext] = []


class ProbeSettings(Settings):
    token: SecretStr  # a plain SecretStr: only the engine's per-source redaction hides it
    env_token: Secret | None = None
    pages: int = 2
    per_page: int = 2
    fail: Literal["", "auth", "transient", "rate", "source", "store", "crash", "reset",
                  "nospace", "quota"] = ""
    fail_after: int = 0
    no_cursor: bool = False
    from_owner: bool = False
    edition: int = 0
    bad_records: int = 0  # a first page with this many things that are not records
    warnings: int = 0  # distinct warnings to report (each twice)
    stranger: bool = False  # mail from someone not (yet) a contractor: files not downloaded
    named: bool = False  # the failure's text starts with the source's name, as some plugins do


class ProbeBase(Connector[ProbeSettings]):
    """Pages of mail from a contractor; no ``reads_mail``: the engine's default applies."""

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        CONTEXTS.append(self.context)
        start = int(cursor.get("n", 0))
        for n in range(self.settings.warnings):
            self.context.warnings.extend([f"no access to folder {n}"] * 2)
        if self.settings.bad_records:
            yield Page(bad_page_records(self.settings.bad_records), {"n": 1})
        for page in range(start, self.settings.pages):
            if self.settings.fail and page >= self.settings.fail_after:
                self._fail()
            records = [self._message(page, i) for i in range(self.settings.per_page)]
            yield Page(records, None if self.settings.no_cursor else {"n": page + 1},
                       progress=(page + 1, self.settings.pages))
        if self.settings.fail and self.settings.pages <= self.settings.fail_after:
            self._fail()

    def _message(self, page: int, i: int) -> Message:
        rid = f"<{self.context.source}-{page}-{i}@x>"
        maria = Identity("email", "maria@example.com", name="Maria")
        owner = Identity("email", "owner@example.com")
        sender, recipient = (owner, maria) if self.settings.from_owner else (maria, owner)
        edition = f" (edition {self.settings.edition})" if self.settings.edition else ""
        attachment = Attachment(f"d{page}{i}.png", data=rid.encode(), remote_id="1")
        if self.settings.stranger:
            sender = Identity("email", "ana@example.com", name="Ana")
            attachment = Attachment(f"d{page}{i}.png", remote_id="1", status="not_downloaded")
        return Message(remote_id=rid, sent_at=datetime(2026, 2, 3, 10, page, i, tzinfo=UTC),
                       sender=sender, recipients=(recipient,),
                       subject=f"draft {page}.{i}{edition}", thread_remote_id="<t@x>",
                       attachments=(attachment,), extra={"at": f"{page}-{i}"})

    def _fail(self) -> None:
        token = self.settings.token.get_secret_value()
        if self.settings.env_token is not None:
            token += " " + self.settings.env_token.get_secret_value()
        text = f"token {token} refused"
        if self.settings.named:
            text = f"{self.context.source}: {text}"
        kind = self.settings.fail
        if kind == "auth":
            raise AuthError(text)
        if kind == "transient":
            raise TransientError(text)
        if kind == "rate":
            raise RateLimited(text, retry_after=42.0)
        if kind == "source":
            raise SourceError(text)
        if kind == "store":
            raise StoreError(text)
        if kind in OS_ERRORS:
            raise OSError(OS_ERRORS[kind], text)
        raise RuntimeError(text)

    def close(self) -> None:
        CLOSED.append(self.context.source)


OS_ERRORS = {"reset": errno.ECONNRESET, "nospace": errno.ENOSPC, "quota": errno.EDQUOT}


def bad_page_records(count: int) -> list[Any]:
    return ["text", 1, 2.5, b"bytes", None, [], {}, (), True][:count]  # each a distinct problem


class ProbeConnector(ProbeBase):
    reads_mail = True


class ProbeApiConnector(ProbeBase):
    """An API, not mail (it does not say ``reads_mail``): mail formats do not apply."""


class ProbePlugin:
    @hookimpl
    def register_platforms(self, register):
        register(Platform("probe", ProbeConnector, ProbeSettings, "test probe"))
        register(Platform("probeapi", ProbeApiConnector, ProbeSettings, "test probe, no mail"))


def probe_engine(tmp_path: Path, sources: dict[str, dict], *plugins, agent: str = "",
                 extra: str = "") -> SyncEngine:
    """An engine over probe sources: ``{name: settings}``; a setting ``enabled`` moves up."""
    text = f"""
[agent]
data_dir = "{tmp_path}/data"
owner_emails = ["owner@example.com"]
{agent}
[[contractors]]
name = "Maria Lopez"
emails = ["maria@example.com"]
{extra}
"""
    for name, settings in sources.items():
        settings = dict(settings)
        enabled = settings.pop("enabled", True)
        platform = settings.pop("platform", "probe")
        text += (f'[[sources]]\nname = "{name}"\nplatform = "{platform}"\n'
                 f"enabled = {str(enabled).lower()}\n")
        text += "[sources.settings]\n"
        for key, value in settings.items():
            text += f"{key} = {toml_value(value)}\n"
    path = tmp_path / "config.toml"
    path.write_text(text)
    host = make_plugin_host(entrypoints=False, extra=[ProbePlugin(), *plugins])
    config = load_config(path, host)
    return SyncEngine(config, host, Store(config.data_dir))


def toml_value(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def fresh_canaries() -> tuple[str, str]:
    """Two 4-character values no secret resolved in this process matches."""
    found: list[str] = []
    while len(found) < 2:
        value = "~" + "".join(secrets_module.choice("ghjkmnpqrstuvwxyzGHJKLMNPQRSTUVWXYZ")
                              for _ in range(3))  # nothing like it in a store
        if not any(value in known or known in value for known in known_secrets()):
            found.append(value)
    return found[0], found[1]


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


PROBE_ERRORS = {
    "auth": ("auth", "token *** refused"),
    "transient": ("transient", "token *** refused"),
    "rate": ("rate_limited", "token *** refused"),
    "source": ("error", 'token *** refused (platform "probe" comes from plugin "ProbePlugin")'),
    "store": ("error", 'token *** refused (platform "probe" comes from plugin "ProbePlugin")'),
    "crash": ("error", "unexpected RuntimeError: token *** refused (a bug in the plugin; run "
                       'with -v for details) (platform "probe" comes from plugin "ProbePlugin")'),
}


@pytest.mark.parametrize("kind", sorted(PROBE_ERRORS))
def test_secret_canary_never_leaves_a_failing_source(tmp_path, caplog, kind):
    """Each source's own 4-character token, through every place an error goes.

    The tokens are plain ``SecretStr`` values no other code path knows (fresh for each
    run), so only the engine's per-source redaction can hide them."""
    canary, canary_2 = fresh_canaries()
    recorder = Recorder()
    engine = probe_engine(tmp_path, {
        "one": {"token": canary, "fail": kind, "fail_after": 1},
        "two": {"token": canary_2, "fail": kind},
    }, recorder)
    CLOSED.clear()
    with caplog.at_level(logging.DEBUG):
        results = engine.sync_all()
    expected_kind, expected_error = PROBE_ERRORS[kind]
    for result in results:
        assert result.ok is False and result.error == expected_error, result.source
        assert result.as_dict()["ok"] is False
        assert result.error_kind == expected_kind
        assert result.retry_after == (42.0 if kind == "rate" else None)
    assert [r.pages for r in results] == [1, 0]  # the first page of "one" is kept
    assert CLOSED == ["one", "two"]  # closed after a failure too
    outputs = [
        json.dumps([r.as_dict() for r in results]),
        json.dumps([r.as_dict() for r in recorder.results]),
        "\n".join(rec.getMessage() for rec in caplog.records),
        json.dumps(engine.store.source_states()),
    ]
    for text in outputs:
        assert canary not in text and canary_2 not in text
    assert canary.encode() not in all_bytes(engine.store.data_dir)
    assert canary_2.encode() not in all_bytes(engine.store.data_dir)
    assert f"one: {expected_error}" in caplog.text and f"two: {expected_error}" in caplog.text
    for name in ("one", "two"):
        assert engine.store.source_state(name)["last_error"] == expected_error


def test_canary_from_env_is_scrubbed_from_verbose_logs(tmp_path, monkeypatch, capsys):
    from agent.cli import setup_logging

    monkeypatch.setenv("RETAINER_TEST_PROBE_TOKEN", "Jx4" + CANARY_2[:1])
    engine = probe_engine(tmp_path, {"one": {"token": "plain", "fail": "crash",
                                             "env_token": {"env": "RETAINER_TEST_PROBE_TOKEN"}}})
    secret = "Jx4" + CANARY_2[:1]
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging(1)  # -v: tracebacks too
    try:
        (result,) = engine.sync_all()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "Traceback" in err and "token plain *** refused" in err
    assert "retainer: debug: traceback for one\nTraceback" in err
    assert secret not in err and secret not in result.error
    assert secret.encode() not in all_bytes(engine.store.data_dir)


def test_failure_counter_counts_and_resets(tmp_path):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY, "fail": "transient",
                                             "fail_after": 5}})
    first = engine.sync_all()[0]
    state = engine.store.source_state("one")
    assert (first.ok, state["failures"], state["error_kind"]) == (False, 1, "transient")
    engine.sync_all()
    state = engine.store.source_state("one")
    assert state["failures"] == 2 and state["last_error"] == "token *** refused"
    assert state["last_error_at"] == state["last_attempt"] and state["platform"] == "probe"
    assert state["cursor"] == {"n": 2} and len(engine.store.messages(source="one")) == 4
    fixed = probe_engine(tmp_path, {"one": {"token": CANARY}})
    result = fixed.sync_all()[0]
    assert result.ok and result.pages == 0 and result.error == "" and result.error_kind == ""
    state = fixed.store.source_state("one")
    assert state["failures"] == 0 and state["last_error"] is None and state["error_kind"] is None
    assert state["last_success"] == state["last_attempt"]
    assert state["last_duration"] == round(result.duration, 3) >= 0
    assert 0 < result.duration < 600  # measured from the start of this sync
    assert state["last_error_at"]  # when it last failed stays known


def test_counts_cursor_progress_and_batches(tmp_path):
    recorder = Recorder()
    engine = probe_engine(tmp_path, {"one": {"token": CANARY, "pages": 3, "per_page": 2}},
                          recorder)
    seen: list[tuple[str, int, int]] = []
    engine.progress = lambda source, done, total: seen.append((source, done, total))
    (result,) = engine.sync_all()
    assert (result.ok, result.pages, result.messages_new, result.deliverables_new) == (True, 3, 6, 6)
    assert result.messages_updated == 0 and not result.stopped
    assert seen == [("one", 1, 3), ("one", 2, 3), ("one", 3, 3)]
    assert [(b.source, len(b.messages), len(b.deliverables)) for b in recorder.batches] == [
        ("one", 2, 2)] * 3
    state = engine.store.source_state("one")
    assert state["cursor"] == {"n": 3} and len(engine.store.messages(source="one")) == 6
    assert recorder.results == [result]
    result.duration = 1.23456
    assert result.as_dict() == {
        "source": "one", "platform": "probe", "ok": True, "messages_new": 6,
        "messages_updated": 0, "deliverables_new": 6, "pages": 3, "error": "",
        "error_kind": "", "warnings": [], "started_at": result.as_dict()["started_at"],
        "duration": 1.235,
    }
    assert result.as_dict()["started_at"].endswith("Z")


def test_page_without_cursor_keeps_the_stored_one(tmp_path):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY, "no_cursor": True}})
    with engine.store.writing():
        engine.store.update_source_state("one", cursor={"n": 0, "kept": True})
    (result,) = engine.sync_all()
    assert result.ok and result.messages_new == 4
    assert engine.store.source_state("one")["cursor"] == {"n": 0, "kept": True}
    assert engine.sync_all()[0].messages_new == 0  # fetched again, stored once
    assert len(engine.store.messages(source="one")) == 4


def test_context_handed_to_the_connector(tmp_path):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY}}, agent="max_attachment_mb = 1.5",
                          extra='[plugins.probe]\nflavour = "x"\n')
    CONTEXTS.clear()
    engine.sync_all()
    (context,) = CONTEXTS
    assert (context.source, context.platform) == ("one", "probe")
    assert context.state_dir == engine.store.source_dir("one")
    assert context.scratch_dir == engine.store.tmp_dir / "one" and context.scratch_dir.is_dir()
    assert context.max_attachment_bytes == int(1.5 * 1024 * 1024)
    assert context.is_owner(Identity("email", "owner@example.com"))
    assert not context.is_owner(Identity("email", "maria@example.com"))
    assert context.wants_attachments(Identity("email", "maria@example.com"))
    assert not context.wants_attachments(Identity("email", "stranger@example.com"))
    assert context.should_stop is engine.should_stop
    assert context.log.name == "retainer.plugins.probe"
    assert context.options == {"flavour": "x"}


def test_sync_all_runs_enabled_sources_or_the_named_ones(tmp_path):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY},
                                     "off": {"token": CANARY_2, "enabled": False},
                                     "two": {"token": CANARY_2}})
    assert [r.source for r in engine.sync_all()] == ["one", "two"]
    assert [r.source for r in engine.sync_all(["two"])] == ["two"]
    calls = iter([False, True])
    engine.should_stop = lambda: next(calls, True)
    assert [r.source for r in engine.sync_all()] == ["one"]  # stop before the next source
    assert [c["name"] for c in engine.store.contractors()] == ["Maria Lopez"]  # seeded once


def test_busy_source_is_reported_not_waited_for(tmp_path):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY}})
    engine.sync_all()
    lock_path = engine.store.source_dir("one") / "sync.lock"
    assert stat.S_IMODE(lock_path.stat().st_mode) == 0o600
    with FileLock(str(lock_path), timeout=0):
        result = engine.sync_source(engine.config.source("one"))
    assert result.ok is False and result.error_kind == "transient" and result.pages == 0
    assert result.error == ("another Retainer process is syncing this source right now "
                            "(the daemon?); try again when it has finished")
    assert engine.store.source_state("one")["failures"] == 1
    assert engine.sync_all()[0].ok  # the lock was not left held


def test_mail_formats_apply_to_mail_sources(tmp_path):
    def interpret(message: Message) -> list[Message]:
        return []  # drop every notification

    class Formats:
        @hookimpl
        def register_mail_formats(self, register):
            register(MailFormat("drop", "probe", lambda m: m.subject.startswith("draft 0"),
                                interpret))

    engine = probe_engine(tmp_path, {"one": {"token": CANARY},
                                     "api": {"token": CANARY, "platform": "probeapi"}}, Formats())
    one, api = engine.sync_all()
    assert one.ok and one.messages_new == 2  # page 0 dropped, page 1 kept
    assert sorted(m["subject"] for m in engine.store.messages(source="one")) == [
        "draft 1.0", "draft 1.1"]
    assert api.ok and api.messages_new == 4  # not mail: the formats leave it alone


def test_records_stored_for_messages_without_deliverables(tmp_path):
    recorder = Recorder()
    engine = engine_for(tmp_path, recorder)
    engine.sync_all(["other"])  # one newsletter: a message, no deliverable
    assert [(b.source, len(b.messages), len(b.deliverables)) for b in recorder.batches] == [
        ("other", 1, 0)]


def test_disk_full_mid_page_keeps_cursor_and_loses_nothing(tmp_path, monkeypatch, caplog):
    """The second page's writes fail in turn (ENOSPC): the cursor stays at the last
    committed page, memory matches disk, and the next sync stores everything once."""
    cursors = [{}, {"offset": 3}, {"offset": 6}, {"offset": 7}]
    for at in range(40):
        run = tmp_path / f"run{at}"
        run.mkdir()
        spy = fsspy.install(monkeypatch)

        class ArmAfterFirstPage:
            @hookimpl
            def records_stored(self, batch, spy=spy, at=at):
                if spy.fail_fsync_at is None and not getattr(self, "armed", False):
                    self.armed = True
                    spy.fail_fsync_at = spy.file_fsyncs + at

        engine = engine_for(run, ArmAfterFirstPage())
        result = engine.sync_all(["feed"])[0]
        fault_hit = spy.fail_fsync_at is None
        monkeypatch.undo()
        if not fault_hit:
            assert result.ok
            break
        if result.ok:  # the fault hit the write of the sync's outcome: logged, data all there
            assert any(r.levelno >= logging.WARNING and "space" in r.getMessage()
                       for r in caplog.records)  # logged, or recorded from the reserve
            assert engine.store.source_state("feed")["cursor"] == {"offset": 7}
            assert len(Store(engine.store.data_dir).deliverables()) == 7
            continue
        assert not result.ok and "free some disk space" in result.error, at
        state = engine.store.source_state("feed")
        assert state["cursor"] == cursors[result.pages], at  # no page counted twice or skipped
        assert state["failures"] == 1, at
        disk = Store(engine.store.data_dir)
        assert engine.store.messages() == disk.messages(), at
        assert engine.store.deliverables() == disk.deliverables(), at
        assert len(disk.messages(source="feed")) >= min(3 * result.pages, len(ITEMS))
        again = engine.sync_all(["feed"])[0]
        assert again.ok, at
        ids = [m["remote_id"] for m in Store(engine.store.data_dir).messages(source="feed")]
        assert sorted(ids) == sorted(item["id"] for item in ITEMS), at
        assert len(Store(engine.store.data_dir).deliverables()) == 7, at
        assert engine.store.source_state("feed")["cursor"] == {"offset": 7}
    else:
        pytest.fail("the fault never ran out of writes to break")
    assert at >= 10  # blobs, messages, deliverables, cursor and the sync's outcome were each hit


def test_result_kinds():
    result = SyncResult(source="s", platform="p")
    assert result.ok and result.error_kind == "" and result.started_at.tzinfo is not None


def test_disabled_source_synced_by_name_is_validated_and_redacted(tmp_path):
    canary, _ = fresh_canaries()
    engine = probe_engine(tmp_path, {
        "off": {"token": canary, "enabled": False},
        "broken": {"token": canary, "enabled": False, "fail": "auth"},
    })
    assert "off" not in engine.config.settings  # a disabled source is validated when used
    (result,) = engine.sync_all(["off"])
    assert result.ok and result.messages_new == 4
    (failed,) = engine.sync_all(["broken"])
    assert failed.error == "token *** refused"  # its secrets are redacted all the same
    assert canary.encode() not in all_bytes(engine.store.data_dir)


def test_engine_options_and_outgoing_mail(tmp_path):
    """progress given to the constructor; the owner's own mail is stored as outgoing."""
    seen: list[tuple[str, int, int]] = []
    probe = probe_engine(tmp_path, {"one": {"token": CANARY, "from_owner": True}})
    engine = SyncEngine(probe.config, probe.host, probe.store,
                        progress=lambda source, done, total: seen.append((source, done, total)))
    (result,) = engine.sync_all()
    assert result.ok and seen == [("one", 1, 2), ("one", 2, 2)]
    messages = engine.store.messages(source="one")
    assert len(messages) == 4
    assert {(m["direction"], m["platform"]) for m in messages} == {("out", "probe")}


def test_updated_messages_are_counted_over_pages(tmp_path):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY}})
    assert engine.sync_all()[0].messages_new == 4
    edited = probe_engine(tmp_path, {"one": {"token": CANARY, "edition": 2}})
    with edited.store.writing():
        edited.store.update_source_state("one", cursor={})  # fetch everything again
    (result,) = edited.sync_all()
    assert (result.pages, result.messages_new, result.messages_updated) == (2, 0, 4)
    assert all(m["subject"].endswith("(edition 2)") for m in edited.store.messages())


def test_secrets_are_resolved_once_per_config_load(tmp_path):
    calls = tmp_path / "calls.txt"
    command = [sys.executable, "-c",
               f"open({str(calls)!r}, 'a').write('x'); print('cmd-token')"]
    engine = probe_engine(tmp_path, {"one": {"token": CANARY, "env_token": {"command": command}}})
    assert calls.read_text() == "x"
    assert engine.sync_all()[0].ok
    assert calls.read_text() == "x"  # the sync used the loaded settings, no second run


def test_results_and_logs_are_exact(tmp_path, caplog):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY, "fail": "source", "fail_after": 1}})
    with caplog.at_level(logging.DEBUG):
        (result,) = engine.sync_all()
    assert result.ok is False and result.as_dict()["ok"] is False
    expected = 'one: token *** refused (platform "probe" comes from plugin "ProbePlugin")'
    assert expected in [r.getMessage() for r in caplog.records if r.name == "retainer.sync"]


def test_dropped_notification_names_its_source(tmp_path, caplog):
    class Formats:
        @hookimpl
        def register_mail_formats(self, register):
            register(MailFormat("drop", "probe", lambda m: True, lambda m: []))

    engine = probe_engine(tmp_path, {"one": {"token": CANARY, "pages": 1, "per_page": 1}},
                          Formats())
    with caplog.at_level(logging.INFO):
        assert engine.sync_all()[0].messages_new == 0
    assert any(r.getMessage().startswith('one: dropped <one-0-0@x> "draft 0.0" from maria@')
               for r in caplog.records)


def test_sync_times_are_utc_whatever_the_local_zone(tmp_path, monkeypatch):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY}})
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        before = datetime.now(UTC)
        engine.sync_all()
        after = datetime.now(UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    attempt = datetime.fromisoformat(engine.store.source_state("one")["last_attempt"])
    assert before - timedelta(seconds=1) <= attempt <= after + timedelta(seconds=1)


@pytest.mark.parametrize("count", [2, 5, 6, 7])
def test_bad_page_is_refused_whole_and_named(tmp_path, count):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY, "bad_records": count}})
    (result,) = engine.sync_all()
    problems = check_page(Page(bad_page_records(count), {"n": 1}))
    assert len(problems) == count
    more = f" (and {count - 5} more)" if count > 5 else ""
    assert result.ok is False and result.error == (
        'plugin "ProbePlugin" (platform "probe") yielded a bad page (page 1): '
        + "; ".join(problems[:5]) + more + "; nothing of it was stored. Fix the plugin (its "
        "contract tests show the same), or disable it with RETAINER_DISABLE_PLUGINS=ProbePlugin")
    assert engine.store.messages() == [] and "cursor" not in engine.store.source_state("one")


def test_warnings_are_kept_distinct_and_bounded(tmp_path):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY, "warnings": 25}})
    (result,) = engine.sync_all()
    expected = [f"no access to folder {n}" for n in range(20)]
    assert result.ok and result.warnings == expected
    assert engine.store.source_state("one")["warnings"] == expected


def other_day_zone() -> str:
    """A time zone whose date differs from the UTC date right now (UTC-12 before noon UTC,
    UTC+14 after): a first-sync day taken from the local clock would show."""
    return "Etc/GMT+12" if datetime.now(UTC).hour < 12 else "Etc/GMT-14"


def test_first_import_cut_off_default_explicit_and_off(tmp_path, monkeypatch):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY}})
    assert engine.store.first_sync_day() is None and engine.store.review_since() == ""
    monkeypatch.setenv("TZ", other_day_zone())
    time.tzset()
    try:
        today = datetime.now(UTC).date().isoformat()
        assert datetime.now().date().isoformat() != today
        assert engine.sync_all()[0].ok
    finally:
        monkeypatch.undo()
        time.tzset()
    # default: the UTC day of the first sync, recorded once; the work dated before it
    # is stored as handled
    assert engine.store.first_sync_day() == today and engine.store.review_since() == today
    assert engine.store.deliverables()
    assert all(d["review_status"] != "unreviewed" for d in engine.store.deliverables())
    explicit = probe_engine(tmp_path, {"one": {"token": CANARY}},
                            agent="review_since = 2026-01-06")
    explicit.sync_all()
    assert explicit.store.review_since() == "2026-01-06"
    assert explicit.store.first_sync_day() == today  # the recorded default is kept
    off = probe_engine(tmp_path, {"one": {"token": CANARY}}, agent="review_since = false")
    off.sync_all()
    assert off.store.review_since() == ""
    default_again = probe_engine(tmp_path, {"one": {"token": CANARY}})
    default_again.sync_all()
    assert default_again.store.review_since() == today


def test_first_import_cut_off_is_none_for_a_store_that_synced_before(tmp_path):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY}}, agent="review_since = false")
    engine.sync_all()
    default = probe_engine(tmp_path, {"one": {"token": CANARY}})
    default.sync_all()  # an upgrade: the default cut-off comes after the store's first sync
    assert default.store.first_sync_day() == "" and default.store.review_since() == ""


def test_promoted_sender_files_are_fetched_again_then_forgotten(tmp_path):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY, "stranger": True},
                                     "two": {"token": CANARY, "stranger": True, "pages": 0}},
                          agent="review_since = false")
    CONTEXTS.clear()
    assert [r.messages_new for r in engine.sync_all()] == [4, 0]
    assert [c.refetch for c in CONTEXTS] == [[], []] and engine.store.deliverables() == []
    with engine.store.writing():
        engine.store.add_contractor("Ana", [Identity("email", "ana@example.com")])
        engine.store.update_source_state("one", cursor={})  # the probe reads them again
    assert engine.store.source_state("one")["backfill"] == ["email:ana@example.com"]
    assert engine.store.source_state("two")["backfill"] == ["email:ana@example.com"]
    CONTEXTS.clear()
    engine.should_stop = lambda: True
    stopped = engine.sync_source(engine.config.source("one"))
    assert stopped.stopped
    expected = [{"at": f"{page}-{i}"} for page in range(2) for i in range(2)]  # oldest first

    def locators(context: Any) -> list[dict[str, Any]]:
        """The plugin's locators; each also carries the message as stored."""
        assert [r["stored"]["remote_id"] for r in context.refetch] == [
            f"<one-{page}-{i}@x>" for page in range(2) for i in range(2)] or not context.refetch
        return [{k: v for k, v in r.items() if k != "stored"} for r in context.refetch]

    assert locators(CONTEXTS[0]) == expected
    # a sync cut short may not have fetched them all: the backfill stays asked for
    assert engine.store.source_state("one")["backfill"] == ["email:ana@example.com"]
    engine.should_stop = lambda: False
    CONTEXTS.clear()
    assert all(r.ok for r in engine.sync_all())
    assert locators(CONTEXTS[0]) == expected and CONTEXTS[1].refetch == []
    assert engine.store.source_state("one")["backfill"] == []
    assert engine.store.source_state("two")["backfill"] == []


def test_context_outside_a_sync_has_a_scratch_folder_of_its_own(tmp_path):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY}},
                          agent="max_attachment_mb = 0.25")
    source = engine.config.source("one")
    outside = engine.context_for(source)
    syncing = engine.context_for(source, syncing=True)
    assert outside.scratch_dir == engine.store.tmp_dir / ".outside-sync" / "one"
    assert stat.S_IMODE(outside.scratch_dir.stat().st_mode) == 0o700
    assert syncing.scratch_dir == engine.store.tmp_dir / "one"
    for context in (outside, syncing):
        assert (context.source, context.platform) == ("one", "probe")
        assert context.max_attachment_bytes == 256 * 1024
        assert context.refetch == [] and dict(context.state) == {}


@pytest.mark.parametrize("kind", sorted(OS_ERRORS))
def test_an_os_error_from_the_plugin_is_reported_by_what_it_means(tmp_path, kind, caplog):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY, "fail": kind, "fail_after": 1}})
    with caplog.at_level(logging.DEBUG, logger="retainer.sync"):
        (result,) = engine.sync_all()
    (traceback,) = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert traceback.getMessage() == "traceback for one"  # what "-v" shows
    shown = logging.Formatter().format(traceback)  # the CLI's filter may have scrubbed it
    assert "Traceback (most recent call last)" in shown
    assert f"{type(OSError(OS_ERRORS[kind], '')).__name__}: [Errno" in shown
    assert result.ok is False and result.pages == 1
    assert engine.store.source_state("one")["cursor"] == {"n": 1}  # the first page stays
    if kind == "reset":
        assert result.error_kind == "error"
        assert result.error == (
            f"unexpected ConnectionResetError: [Errno {errno.ECONNRESET}] token *** refused (a bug in the "
            "plugin, or a problem with the disk; run with -v for details) "
            '(platform "probe" comes from plugin "ProbePlugin")')
    else:  # a full disk (or quota) is transient: the next sync goes on
        assert result.error_kind == "transient"
        assert result.error == (
            f"no space left in {engine.store.data_dir}; free some disk space: the next sync "
            "goes on from the last committed page")
    assert engine.store.source_state("one")["error_kind"] == result.error_kind


@pytest.mark.parametrize("kind", sorted(OS_ERRORS))
def test_strict_mode_raises_an_os_error_unless_the_disk_is_full(tmp_path, kind):
    probe = probe_engine(tmp_path, {"one": {"token": CANARY, "fail": kind}})
    host = make_plugin_host(entrypoints=False, strict=True, extra=[ProbePlugin()])
    engine = SyncEngine(probe.config, host, probe.store)
    if kind == "reset":  # a plugin author sees the traceback
        with pytest.raises(OSError, match="refused"):
            engine.sync_all()
    else:
        (result,) = engine.sync_all()
        assert result.ok is False and result.error_kind == "transient"


KILLED_SYNC = """
import os, signal, sys
sys.path.insert(0, {cwd!r})
from pathlib import Path
import tests.support.feed as feed
from agent import hookimpl
from agent.config import load_config
from agent.plugins import make_plugin_host
from agent.store import Store
from agent.sync import SyncEngine

where, source = sys.argv[1], sys.argv[2]

def audit(event, args):
    # just before the first page's cursor (with its journal) replaces meta.json
    if (where == "cursor" and event == "os.rename" and str(args[1]).endswith("/meta.json")
            and b"announcing" in Path(args[0]).read_bytes()):
        os.kill(os.getpid(), signal.SIGKILL)

class Killer:
    @hookimpl
    def records_stored(self, batch):
        if where == "hook":  # the first page committed, not announced yet
            os.kill(os.getpid(), signal.SIGKILL)

host = make_plugin_host(entrypoints=False, extra=[feed, Killer()])
config = load_config(Path({config!r}), host)
sys.addaudithook(audit)
SyncEngine(config, host, Store(config.data_dir)).sync_all([source])
"""


@pytest.mark.parametrize(("where", "source", "page"), [
    ("cursor", "feed", 3), ("hook", "feed", 3),
    ("hook", "other", 1)])  # a newsletter: a message, no deliverable
def test_a_page_committed_by_a_killed_sync_is_announced_once_by_the_next(
        tmp_path, caplog, where, source, page):
    config = make_config(tmp_path)
    script = textwrap.dedent(KILLED_SYNC.format(cwd=str(Path.cwd()), config=str(config)))
    killed = subprocess.run([sys.executable, "-c", script, where, source], capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    store = Store(tmp_path / "data")
    assert len(store.messages(source=source)) == page  # the first page is in
    pending = store.source_state(source)["pending"]
    assert pending["stage"] == ("committing" if where == "cursor" else "announcing")
    assert len(pending["messages"]) == page
    recorder = Recorder()
    engine = engine_for(tmp_path, recorder)
    with caplog.at_level(logging.INFO, logger="retainer.sync"):
        assert engine.sync_all([source])[0].ok
    files = page if source == "feed" else 0
    assert f"{source}: announcing {page} messages and {files} deliverables an interrupted " \
        "sync stored" in [r.getMessage() for r in caplog.records]
    announced = [m["id"] for b in recorder.batches for m in b.messages]
    stored = [m["id"] for m in engine.store.messages(source=source)]
    assert sorted(announced) == sorted(stored) and len(stored) == (7 if files else 1)
    assert {b.source for b in recorder.batches} == {source}
    delivered = [d["id"] for b in recorder.batches for d in b.deliverables]
    assert sorted(delivered) == sorted(d["id"] for d in engine.store.deliverables())
    assert engine.store.source_state(source)["pending"] is None


def test_a_sync_with_nothing_new_writes_only_its_outcome(tmp_path, monkeypatch):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY},
                                     "empty": {"token": CANARY, "pages": 0}})
    assert engine.sync_all(["one"])[0].messages_new == 4
    for name in ("one", "empty"):  # the cursor at the end; a source with nothing at all
        spy = fsspy.install(monkeypatch)
        (result,) = engine.sync_all([name])
        assert result.ok and result.pages == 0
        written = [Path(c.dest).name for c in spy.calls if c.kind == "replace"]
        assert written == ["meta.json"]  # the outcome, no journal
        monkeypatch.undo()
    assert "pending" not in engine.store.source_state("empty")


@pytest.mark.parametrize(("fault", "times", "reserve_used"), [
    (errno.EIO, 1, False),  # a failing disk: not a matter of space, no second try
    (errno.ENOSPC, 2, True),  # a full disk, still full after the reserve was freed
])
def test_a_sync_whose_outcome_cannot_be_written_still_reports_it(tmp_path, monkeypatch, caplog,
                                                                  fault, times, reserve_used):
    """The records are committed; only the outcome (meta.json) cannot be written: the
    caller and the ``source_synced`` hook still get the result, the failure is logged."""
    recorder = Recorder()
    engine = probe_engine(tmp_path, {"one": {"token": CANARY}}, recorder)
    assert engine.sync_all(["one"])[0].messages_new == 4
    before = engine.store.source_state("one")
    reserve = engine.store.data_dir / "space-reserve"
    assert reserve.exists()
    spy = fsspy.install(monkeypatch)
    spy.fail_fsync_at, spy.fail_errno, spy.fail_times = 0, fault, times
    (result,) = engine.sync_all(["one"])
    monkeypatch.undo()
    assert spy.fail_fsync_at is None and spy.file_fsyncs == times  # every fault was hit
    assert isinstance(result, SyncResult) and result.ok and result.source == "one"
    assert recorder.results[-1] is result  # the hook ran for it
    (logged,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
                 and "could not record the sync result" in r.getMessage()]
    assert logged.startswith("one: could not record the sync result: ")
    assert ("no space left" in logged) is reserve_used and "meta.json" in logged
    assert reserve.exists() is not reserve_used
    assert Store(engine.store.data_dir).source_state("one") == before  # old outcome intact


def test_a_stopped_sync_leaves_no_journal_and_nothing_is_announced_twice(tmp_path):
    recorder = Recorder()
    engine = engine_for(tmp_path, recorder)
    engine.should_stop = lambda: True
    stopped = engine.sync_source(engine.config.source("feed"))
    assert stopped.stopped and stopped.pages == 1
    assert engine.store.source_state("feed")["pending"] is None  # announced, journal closed
    engine.should_stop = lambda: False
    assert engine.sync_all(["feed"])[0].ok
    announced = [m["id"] for b in recorder.batches for m in b.messages]
    assert sorted(announced) == sorted(m["id"] for m in engine.store.messages(source="feed"))
    assert len(announced) == 7


def test_a_sync_that_stores_something_leaves_the_read_models_in_use_fresh(tmp_path):
    from agent.stats import roster_rows
    from agent.store import readmodels

    engine = engine_for(tmp_path)
    roster_rows(engine.store)  # a listing ran: the roster model is in use
    assert engine.sync_all(["feed"])[0].messages_new == 7
    assert readmodels.stale(engine.store, "roster") is False  # rebuilt by the sync, not later


def test_a_sync_brings_the_newest_messages_model_a_listing_saved_up_to_date(tmp_path):
    from agent.store import recent

    engine = engine_for(tmp_path)
    assert engine.store.newest_messages(5) == []  # a listing ran: the model is saved
    saved = recent.model_path(engine.store.root).read_bytes()
    assert engine.sync_all(["feed"])[0].messages_new == 7
    assert recent.model_path(engine.store.root).read_bytes() != saved  # by the sync
    assert recent.refresh(engine.store) is False  # nothing left for a listing to do
    newest = engine.store.newest_messages(5)
    assert newest and newest == list(engine.store.iter_messages_newest_first())[:5]


def test_a_read_model_that_cannot_be_rebuilt_does_not_fail_the_sync(tmp_path, monkeypatch,
                                                                     caplog):
    from agent.store import readmodels

    builds: list[int] = []

    def build(store: Store) -> dict[str, int]:
        builds.append(1)
        if len(builds) > 1:
            raise RuntimeError("probe model broken")
        return {}

    monkeypatch.setattr(readmodels, "BUILDERS", dict(readmodels.BUILDERS))  # restored after
    readmodels.register("probe", "1", ["messages"], build)
    engine = engine_for(tmp_path)
    readmodels.view(engine.store, "probe", "1", ["messages"], build)  # in use
    result = engine.sync_all(["feed"])[0]
    assert result.ok and result.messages_new == 7 and len(builds) == 2
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
            and "read models" in r.getMessage()] == [
        "feed: read models not refreshed (the next listing rebuilds them): "
        "RuntimeError: probe model broken"]


def test_an_error_that_names_its_source_is_not_shown_with_the_name_twice(tmp_path, caplog):
    engine = probe_engine(tmp_path, {"one": {"token": CANARY, "fail": "source", "named": True}})
    (result,) = engine.sync_all()
    assert not result.ok and result.error.startswith("token *** refused")
    assert engine.store.source_state("one")["last_error"] == result.error
    assert f"one: {result.error}" in [r.getMessage() for r in caplog.records
                                       if r.levelno == logging.ERROR]
