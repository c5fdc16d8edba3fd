"""Plugin loading, isolation and operability: one test per hook, env switches, broken plugins."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner

import plugins.maildir
from agent import testing as kit
from agent.cli import cli
from agent.connector import Connector, Platform, Settings
from agent.errors import ConfigError, PluginError
from agent.mailformats import MailFormat
from agent.models import Cursor, Identity, Message, Page, Record
from agent.plugins import PluginHost, hookimpl, make_plugin_host
from agent.store.memory import MemoryStore
from agent.sync import StoredBatch, SyncResult
from agent.testing import ConnectorContract, Harness, RemoteFixture, check_records
from tests.contract.test_maildir_contract import MaildirRemote

MARIA = Identity("email", "maria@example.com", "Maria Lopez")

# The kit's fixtures reach every test through the `pytest11` entry point once Retainer is
# installed; naming them here keeps this module working from a bare checkout too.
plugin_host = kit.plugin_host
memory_store = kit.memory_store


class NoteSettings(Settings):
    notes: list[str] = []


class NoteConnector(Connector[NoteSettings]):
    """Yields one message per configured note, in one page."""

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        done = int(cursor.get("done", 0))
        records = [Message(f"note-{i}", datetime(2026, 1, 5, 10, i, tzinfo=UTC), MARIA, text=note)
                   for i, note in enumerate(self.settings.notes) if i >= done]
        if records:
            yield Page(records, {"done": len(self.settings.notes)})


class NotesPlugin:
    """A throwaway plugin object (the datasette "undo" pattern, but on a fresh host)."""

    __name__ = "notes"

    @hookimpl
    def register_platforms(self, register: Callable[[Platform], None]) -> None:
        register(Platform("notes", NoteConnector, NoteSettings, "notes from the config"))


class Recorder:
    __name__ = "recorder"

    def __init__(self) -> None:
        self.batches: list[StoredBatch] = []
        self.results: list[SyncResult] = []

    @hookimpl
    def records_stored(self, batch: StoredBatch) -> None:
        self.batches.append(batch)

    @hookimpl
    def source_synced(self, result: SyncResult) -> None:
        self.results.append(result)


def notes_harness(tmp_path: Path, *extra: object) -> Harness:
    class Remote(RemoteFixture):
        plugin = NotesPlugin()
        platform = "notes"

        def settings(self) -> dict[str, Any]:
            return {"notes": ["first", "second"]}

        def add_message(self, text: str) -> None:
            raise NotImplementedError

        def add_attachment(self, filename: str, data: bytes) -> None:
            raise NotImplementedError

    harness = Harness.build(Remote(), tmp_path / "data")
    for plugin in extra:
        harness.host.add(plugin)
    return harness


# -- one test per hook (test_hookspecs.py checks that each hook has one) -----------------


def test_hook_register_platforms(plugin_host: PluginHost) -> None:
    plugin_host.add(NotesPlugin())
    assert plugin_host.platform("notes").connector is NoteConnector
    assert plugin_host.infos["notes"].platforms == ["notes"]
    assert plugin_host.infos["notes"].hooks == ["register_platforms"]

    class Wrong:
        __name__ = "wrong"

        @hookimpl
        def register_platforms(self, register: Callable[[object], None]) -> None:
            register("not a platform")

    lenient = make_plugin_host(entrypoints=False, extra=[Wrong()])
    assert "register() takes an agent.Platform, not str" in lenient.infos["wrong"].error
    with pytest.raises(PluginError, match='plugin "wrong"'):
        plugin_host.add(Wrong())


def test_hook_register_mail_formats(plugin_host: PluginHost) -> None:
    fmt = MailFormat("acme", "acme", lambda m: "acme" in m.subject, lambda m: ())

    class Formats:
        __name__ = "acme-mail"

        @hookimpl
        def register_mail_formats(self, register: Callable[[MailFormat], None]) -> None:
            register(fmt)

    plugin_host.add(Formats())
    assert plugin_host.mail_formats == [fmt]
    assert plugin_host.infos["acme-mail"].hooks == ["register_mail_formats"]


def test_hook_register_commands(plugin_host: PluginHost) -> None:
    class Commands:
        __name__ = "hello"

        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command()
            def hello() -> None:
                """Say hello."""
                click.echo("hello from a plugin")

    group = click.Group("retainer")
    plugin_host.add(Commands())
    plugin_host.call_each("register_commands", cli=group)
    result = CliRunner().invoke(group, ["hello"])
    assert (result.exit_code, result.output) == (0, "hello from a plugin\n")


def test_hook_register_notifiers() -> None:
    from agent.notify import Event, Notifier, NotifierSettings, build_notifiers

    received: list[list[Event]] = []

    class PagerSettings(NotifierSettings):
        channel: str

    class Pager(Notifier):
        settings_model = PagerSettings

        def send(self, events: list[Event]) -> None:
            received.append(events)

    class PagerPlugin:
        __name__ = "pager"

        @hookimpl
        def register_notifiers(self, register: Any) -> None:
            register("pager", Pager)

    host = make_plugin_host(entrypoints=False, extra=[PagerPlugin()])
    (pager,) = build_notifiers([{"type": "pager", "channel": "#ops"}], host)
    assert isinstance(pager, Pager) and pager.settings.channel == "#ops"  # type: ignore[attr-defined]
    pager.send([Event("overdue", "k", "1 deliverable overdue", "logo.png")])
    assert received[0][0].title == "1 deliverable overdue"
    with pytest.raises(ConfigError, match="channel"):
        build_notifiers([{"type": "pager"}], host)
    with pytest.raises(ConfigError, match="pager"):
        build_notifiers([{"type": "pager", "channel": "x"}], make_plugin_host(entrypoints=False))


def test_hook_records_stored(tmp_path: Path) -> None:
    recorder = Recorder()
    harness = notes_harness(tmp_path, recorder)
    harness.sync()
    [batch] = recorder.batches
    assert batch.source == "contract"
    assert sorted(m["text"] for m in batch.messages) == ["first", "second"]
    harness.sync()
    assert len(recorder.batches) == 1  # nothing new, nothing announced


def test_hook_source_synced(tmp_path: Path) -> None:
    recorder = Recorder()

    class Crashing:
        __name__ = "crashing"

        @hookimpl
        def source_synced(self, result: SyncResult) -> None:
            raise RuntimeError("notifier down")

    harness = notes_harness(tmp_path, recorder)
    harness.host.strict = False  # an event hook's failure is logged, never fails the sync
    harness.host.add(Crashing())
    result = harness.sync()
    assert recorder.results == [result]
    assert (result.ok, result.messages_new) == (True, 2)


# -- the kit's own pieces --------------------------------------------------------------------


def test_memory_store_is_a_working_store(memory_store: MemoryStore) -> None:
    records: list[Record] = [Message("m1", datetime(2026, 1, 5, tzinfo=UTC), MARIA, text="hi"),
                             Message("m2", datetime(2026, 2, 5, tzinfo=UTC), MARIA, text="yo")]
    with memory_store.writing():
        first = memory_store.commit_page("s", "notes", records)
        again = memory_store.commit_page("s", "notes", records)
        memory_store.update_source_state("s", cursor={"done": 2})
    assert (first.messages_new, again.messages_new, again.messages_updated) == (2, 0, 0)
    assert [m["text"] for m in memory_store.messages()] == ["yo", "hi"]
    assert memory_store.source_state("s")["cursor"] == {"done": 2}
    assert not list((memory_store.root / "messages").iterdir())  # nothing on disk


def test_check_records_names_each_problem() -> None:
    naive = datetime(2026, 1, 5)
    problems = check_records([
        Message("a", naive, MARIA),
        Message("", datetime(2026, 1, 5, tzinfo=UTC), MARIA),
        Message("b", datetime(2026, 1, 5, tzinfo=UTC), Identity("email", "")),
        {"remote_id": "c"},
        Message("d", datetime(2026, 1, 5, tzinfo=UTC), MARIA),
        Message("d", datetime(2026, 1, 5, tzinfo=UTC), MARIA),
    ])
    text = "\n".join(problems)
    assert "sent_at is a naive datetime" in text
    assert "remote_id must be a non-empty str" in text
    assert "must be an Identity with platform and address" in text
    assert "not an agent.Message, agent.Submission or agent.Contract" in text
    assert "remote_id repeats" in text
    assert len(problems) == 5


def test_contract_kit_catches_a_connector_that_loses_messages(tmp_path: Path) -> None:
    """The kit can fail: a connector that skips a page's worth on resume is caught."""

    class Forgetful(plugins.maildir.MaildirConnector):
        def fetch(self, cursor: Cursor) -> Iterator[Page]:
            for i, page in enumerate(super().fetch(cursor)):
                if i == 0 or not cursor:
                    yield page

    class ForgetfulPlugin:
        __name__ = "forgetful"

        @hookimpl
        def register_platforms(self, register: Callable[[Platform], None]) -> None:
            register(Platform("forgetful", Forgetful, plugins.maildir.MaildirSettings))

    class Remote(MaildirRemote):
        plugin = ForgetfulPlugin()
        platform = "forgetful"

    harness = Harness.build(Remote(tmp_path / "Maildir"), tmp_path / "data")
    with pytest.raises(AssertionError):
        ConnectorContract().test_interrupted_sync_resumes_without_loss_or_duplicates(
            harness, "tok")


# -- environment switches and `retainer plugins` ----------------------------------------------


def test_load_plugins_env_only_these_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETAINER_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("RETAINER_LOAD_PLUGINS", "maildir")
    host = make_plugin_host()
    assert list(host.infos) == ["maildir"]
    assert list(host.platforms) == ["maildir"]
    monkeypatch.setenv("RETAINER_LOAD_PLUGINS", "")
    assert make_plugin_host().infos == {}
    monkeypatch.delenv("RETAINER_LOAD_PLUGINS")
    assert "maildir" in make_plugin_host().infos


def test_disable_plugins_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETAINER_LOAD_PLUGINS", raising=False)
    monkeypatch.setenv("RETAINER_DISABLE_PLUGINS", "maildir, nosuchplugin")
    host = make_plugin_host()
    assert "maildir" not in host.infos
    with pytest.raises(PluginError, match='no plugin provides platform "maildir"'):
        host.platform("maildir")


@pytest.fixture
def broken_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A distribution on sys.path with four faulty plugins next to the builtin maildir one.

    Found through real entry-point metadata, exactly as an installed package would be.
    """
    site = tmp_path / "site"
    dist = site / "retainer_broken-0.3.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: retainer-broken\nVersion: 0.3.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [retainer]
        broken = retainer_broken_import
        hookraiser = retainer_broken_hook
        twin = retainer_broken_twin
        badrecords = retainer_broken_records
        """))
    (site / "retainer_broken_import.py").write_text("import retainer_no_such_dependency\n")
    (site / "retainer_broken_hook.py").write_text(textwrap.dedent("""\
        from agent.plugins import hookimpl

        @hookimpl
        def register_platforms(register):
            raise RuntimeError("the plugin author forgot something")
        """))
    (site / "retainer_broken_twin.py").write_text(textwrap.dedent("""\
        from agent.connector import Platform
        from agent.plugins import hookimpl
        from plugins.maildir import MaildirConnector, MaildirSettings

        @hookimpl
        def register_platforms(register):
            register(Platform("maildir", MaildirConnector, MaildirSettings))
        """))
    (site / "retainer_broken_records.py").write_text(textwrap.dedent("""\
        from datetime import datetime
        from agent.connector import Connector, Platform, Settings
        from agent.models import Page
        from agent.plugins import hookimpl

        class BadConnector(Connector):
            def fetch(self, cursor):
                yield Page([{"remote_id": "1", "text": "a dict, not a Message"}], {"n": 1})

        @hookimpl
        def register_platforms(register):
            register(Platform("badrecords", BadConnector, Settings))
        """))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("RETAINER_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("RETAINER_LOAD_PLUGINS", "maildir,broken,hookraiser,twin,badrecords")
    maildir = MaildirRemote(tmp_path / "Maildir")
    maildir.add_message("still arriving")
    config = tmp_path / "config.toml"
    config.write_text(textwrap.dedent(f"""\
        [agent]
        data_dir = "{tmp_path / 'data'}"

        [[sources]]
        name = "bad"
        platform = "badrecords"

        [[sources]]
        name = "mail"
        platform = "maildir"

        [sources.settings]
        path = "{maildir.root}"
        """))
    return SimpleNamespace(config=config, path=site)


def test_plugins_json_shows_version_platforms_hooks_and_load_errors(
        broken_plugins: SimpleNamespace) -> None:
    result = CliRunner().invoke(cli, ["--config", str(broken_plugins.config), "-q",
                                      "plugins", "--json"])
    assert result.exit_code == 0, result.output
    docs = {d["name"]: d for d in json.loads(result.stdout)}
    assert set(docs) == {"maildir", "broken", "hookraiser", "twin", "badrecords"}
    for doc in docs.values():
        assert set(doc) == {"name", "version", "module", "platforms", "hooks", "error", "warning"}
    assert docs["maildir"]["platforms"] == ["maildir"] and docs["maildir"]["error"] == ""
    assert docs["badrecords"] == {
        "name": "badrecords", "version": "0.3.0", "module": "retainer_broken_records",
        "platforms": ["badrecords"], "hooks": ["register_platforms"], "error": "",
        "warning": ""}
    assert "could not import retainer_broken_import" in docs["broken"]["error"]
    assert "ModuleNotFoundError" in docs["broken"]["error"]
    assert "register_platforms failed: RuntimeError: the plugin author forgot something" in (
        docs["hookraiser"]["error"])
    assert docs["twin"]["error"] == ('platform "maildir" is already provided by plugin "maildir"; '
                                     'disable one of "maildir" and "twin"')


def test_broken_plugins_are_named_and_the_rest_keeps_working(
        broken_plugins: SimpleNamespace) -> None:
    runner = CliRunner()
    listing = runner.invoke(cli, ["--config", str(broken_plugins.config), "plugins"])
    assert listing.exit_code == 0
    for name in ("broken", "hookraiser", "twin"):
        assert f'plugin "{name}" was skipped' in listing.stderr
        assert f"RETAINER_DISABLE_PLUGINS={name}" in listing.stderr
    assert "FAILED: could not import" in listing.stdout

    synced = runner.invoke(cli, ["--config", str(broken_plugins.config), "sync", "--json"])
    assert synced.exit_code == 1  # one source failed...
    results = {r["source"]: r for r in json.loads(synced.stdout)}
    assert (results["mail"]["ok"], results["mail"]["messages_new"]) == (True, 1)  # ...not this one
    bad = results["bad"]
    assert (bad["ok"], bad["platform"]) == (False, "badrecords")
    assert bad["error"].startswith(
        'plugin "badrecords" (platform "badrecords") yielded a bad page (page 1): '
        "dict '?': not an agent.Message, agent.Submission or agent.Contract; nothing of it "
        "was stored."), bad["error"]
    shown = runner.invoke(cli, ["--config", str(broken_plugins.config), "messages", "--json"])
    assert [m["text"].strip() for m in json.loads(shown.stdout)] == ["still arriving"]


def test_strict_turns_isolation_off(broken_plugins: SimpleNamespace,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(
        cli, ["--config", str(broken_plugins.config), "--strict", "plugins"])
    assert result.exit_code != 0
    assert 'plugin "broken": could not import retainer_broken_import' in result.stderr
    monkeypatch.setenv("RETAINER_LOAD_PLUGINS", "hookraiser")
    assert "hookraiser" in make_plugin_host().infos  # isolated: logged and listed
    with pytest.raises(PluginError, match='plugin "hookraiser": register_platforms failed'):
        make_plugin_host(strict=True)


def test_contract_kit_catches_a_connector_that_ignores_its_cursor(tmp_path: Path) -> None:
    """The store's idempotent upsert hides a connector that re-reads everything; the kit does not."""

    class Amnesiac(plugins.maildir.MaildirConnector):
        def fetch(self, cursor: Cursor) -> Iterator[Page]:
            yield from super().fetch({})

    class AmnesiacPlugin:
        __name__ = "amnesiac"

        @hookimpl
        def register_platforms(self, register: Callable[[Platform], None]) -> None:
            register(Platform("amnesiac", Amnesiac, plugins.maildir.MaildirSettings))

    class Remote(MaildirRemote):
        plugin = AmnesiacPlugin()
        platform = "amnesiac"

    for i, check in enumerate((ConnectorContract.test_noop_sync_stores_nothing_new,
                               ConnectorContract.test_cursor_committed_after_records_and_moves_forward)):
        harness = Harness.build(Remote(tmp_path / f"Maildir{i}"), tmp_path / f"data{i}")
        with pytest.raises(AssertionError, match=r"fetched everything again|moved backwards"):
            check(ConnectorContract(), harness, "tok")
