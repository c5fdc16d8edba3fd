"""What a plugin author ran into (issue 15), checked with a plugin written from the guide.

``tests/support/retainer_drop_folder.py`` is a "drop folder" platform written the way an
outside author would: public imports only, ``LocalFolder`` settings, files handed over
by path, ``under_contract`` from its settings, and ``Connector.committed``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import agent
from agent.cli import cli
from agent.connector import check_page
from agent.errors import PluginError
from agent.models import Attachment, Identity, Message, Page, Submission
from agent.plugins import NO_HOOKS, make_plugin_host, plugin_name
from agent.review import queue
from agent.stats import Facts, compute
from agent.store import Store
from agent.testing import ConnectorContract, RemoteFixture, run_sync
from tests.support import retainer_drop_folder as drop
from tests.support.workflow_mail import run

WHEN = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
MARIA = Identity("email", "maria@example.com", "Maria Lopez")


def deliver(root: Path, person: str, delivery: str, files: dict[str, bytes],
            notes: str = "") -> Path:
    folder = root / person / delivery
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    if notes:
        (folder / drop.NOTES).write_text(notes)
    return folder


# -- the drop folder passes the contract kit (hostile names in its own folder included) ----


class DropRemote(RemoteFixture):
    plugin = drop
    platform = "drop-folder"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.serial = 0

    def settings(self) -> dict[str, Any]:
        return {"root": str(self.root), "contractors": {"maria": "maria@example.com"},
                "page_size": 2}

    def _next(self) -> str:
        self.serial += 1
        return f"{self.serial:04d}"

    def add_message(self, text: str) -> None:
        deliver(self.root, "maria", self._next(), {}, notes=text)

    def add_attachment(self, filename: str, data: bytes) -> bytes | None:
        # a real folder cannot hold "../x": the file is named as the filesystem allows,
        # and keeps the token, so the kit must not count it as written by the store
        safe = filename.replace("/", "_").replace("\\", "_").lstrip(".") or "file"
        deliver(self.root, "maria", self._next(), {safe: data})
        return None


class TestDropFolderContract(ConnectorContract):
    test_auth_failure_is_auth_error = None  # type: ignore[assignment]
    test_transient_failure_is_transient_error = None  # type: ignore[assignment]

    @pytest.fixture
    def remote(self, tmp_path: Path) -> RemoteFixture:
        return DropRemote(tmp_path / "drop")


def test_kit_and_cli_call_the_plugin_by_one_name() -> None:
    assert plugin_name(drop) == "drop-folder"
    host = make_plugin_host(entrypoints=False, strict=True, extra=[drop])
    assert host.platform_owner["drop-folder"] == "drop-folder"
    assert [i.name for i in host.infos_sorted()] == ["drop-folder"]


# -- 1. path settings ------------------------------------------------------------------------


def test_path_settings_expand_home_and_variables(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DROP_NAME", "shared")
    (tmp_path / "shared").mkdir()
    assert drop.DropFolderSettings(root="~/shared").root == tmp_path / "shared"
    assert drop.DropFolderSettings(root="$HOME/${DROP_NAME}").root == tmp_path / "shared"


def write_config(tmp_path: Path, root: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f'''
[agent]
data_dir = "{tmp_path / 'data'}"
owner_emails = ["owner@example.com"]

[[sources]]
name = "drop"
platform = "maildir"

[sources.settings]
path = "{root}"
''')
    return config


def test_missing_folder_fails_config_check_and_sync(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = write_config(tmp_path, "~/Mail")
    runner = CliRunner()
    checked = runner.invoke(cli, ["--config", str(config), "config", "check"])
    assert checked.exit_code == 1
    assert 'sources[0] ("drop"): settings.path' in checked.stderr, checked.stderr
    assert f"{tmp_path / 'Mail'} does not exist; create it or fix the path" in checked.stderr
    synced = runner.invoke(cli, ["--config", str(config), "sync"])
    assert synced.exit_code == 1 and "does not exist" in synced.stderr
    (tmp_path / "Mail" / "cur").mkdir(parents=True)
    checked = runner.invoke(cli, ["--config", str(config), "config", "check", "--json"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["sources"][0]["settings"]["path"] == str(tmp_path / "Mail")


# -- 2. strict mode, and the host's checks on every page -----------------------------------


class Naive(agent.Connector[agent.Settings]):
    def fetch(self, cursor: agent.Cursor) -> Iterator[Page]:
        yield Page([Message("a", datetime(2026, 1, 5), MARIA)], cursor={"n": 1})


class BadCursor(agent.Connector[agent.Settings]):
    def fetch(self, cursor: agent.Cursor) -> Iterator[Page]:
        yield Page([Message("a", WHEN, MARIA)], cursor={"at": WHEN})


class BareMessage(agent.Connector[agent.Settings]):
    def fetch(self, cursor: agent.Cursor) -> Iterator[Any]:
        yield Message("a", WHEN, MARIA)


class Crashing(agent.Connector[agent.Settings]):
    def fetch(self, cursor: agent.Cursor) -> Iterator[Page]:
        raise KeyError("folder-index")
        yield  # pragma: no cover


class BadPlugins:
    __name__ = "retainer_bad_pages"

    @agent.hookimpl
    def register_platforms(self, register: Any) -> None:
        for name, connector in (("naive", Naive), ("badcursor", BadCursor),
                                ("bare", BareMessage), ("crashing", Crashing)):
            register(agent.Platform(name, connector, agent.Settings))


@pytest.mark.parametrize(("platform", "problem"), [
    ("naive", "Message 'a': sent_at is a naive datetime; give it a timezone"),
    ("badcursor", "is not JSON-serializable"),
    ("bare", "fetch yielded a Message, not an agent.Page (wrap records in agent.Page"),
])
def test_host_refuses_bad_pages_naming_the_plugin(tmp_path: Path, platform: str,
                                                  problem: str) -> None:
    host = make_plugin_host(entrypoints=False, strict=False, extra=[BadPlugins()])
    from agent.config import AgentSection, Config, SourceConfig
    from agent.sync import SyncEngine

    config = Config(path=tmp_path / "c.toml",
                    agent=AgentSection(data_dir=tmp_path / "data", owner_emails=[]),
                    contractors=[], sources=[SourceConfig(name="s", platform=platform, settings={})])
    store = Store(tmp_path / "data")
    result = SyncEngine(config, host, store).sync_source(config.sources[0])
    assert not result.ok
    assert result.error.startswith(f'plugin "bad-pages" (platform "{platform}") yielded a '
                                   "bad page (page 1)"), result.error
    assert problem in result.error
    assert store.messages() == [] and store.source_state("s").get("cursor") is None
    # strict: the same refusal raises
    strict = make_plugin_host(entrypoints=False, strict=True, extra=[BadPlugins()])
    with pytest.raises(PluginError, match="yielded a bad page"):
        SyncEngine(config, strict, store).sync_source(config.sources[0])


def test_check_page_accepts_a_good_page() -> None:
    assert check_page(Page([Message("a", WHEN, MARIA)], cursor={"after": "a"})) == []


@pytest.fixture
def crashing_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config whose one source's plugin raises KeyError in fetch (found via sys.path)."""
    site = tmp_path / "site"
    (site / "retainer_crashing-0.1.dist-info").mkdir(parents=True)
    (site / "retainer_crashing-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: retainer-crashing\nVersion: 0.1\n")
    (site / "retainer_crashing-0.1.dist-info" / "entry_points.txt").write_text(
        "[retainer]\ncrashing = retainer_crashing\n")
    (site / "retainer_crashing.py").write_text(
        "import agent\nfrom tests.test_plugin_authors import Crashing\n\n"
        "@agent.hookimpl\ndef register_platforms(register):\n"
        "    register(agent.Platform('crashing', Crashing, agent.Settings))\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("RETAINER_LOAD_PLUGINS", "crashing")
    config = tmp_path / "config.toml"
    config.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n\n'
                      '[[sources]]\nname = "c"\nplatform = "crashing"\n')
    return config


def test_strict_raises_a_fetch_error_with_its_traceback(crashing_config: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    plain = runner.invoke(cli, ["--config", str(crashing_config), "sync"])
    assert plain.exit_code == 1 and "c: failed (error)" in plain.stdout
    assert "retainer: error: c: unexpected KeyError" in plain.stderr
    strict = runner.invoke(cli, ["--config", str(crashing_config), "--strict", "sync"])
    assert isinstance(strict.exception, KeyError), strict.output
    monkeypatch.setenv("RETAINER_STRICT", "1")
    env = runner.invoke(cli, ["--config", str(crashing_config), "sync"])
    assert isinstance(env.exception, KeyError), env.output


def test_plugin_without_hookimpls_is_flagged(tmp_path: Path) -> None:
    class Forgetful:
        __name__ = "retainer_forgetful"

        def register_platforms(self, register: Any) -> None:  # no @hookimpl
            raise AssertionError("never called")

    host = make_plugin_host(entrypoints=False, extra=[Forgetful()])
    (info,) = host.infos_sorted()
    assert (info.name, info.hooks, info.error, info.warning) == ("forgetful", [], "", NO_HOOKS)
    assert info.as_dict()["warning"].startswith("no hook implementations")


# -- 3. the contractor rule -------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data")
    with s.writing():
        yield s


def submission(remote_id: str, who: Identity, **kw: Any) -> Submission:
    return Submission(remote_id, WHEN, who, Attachment("work.pdf", data=b"%PDF work"), **kw)


def test_submission_from_unknown_sender_joins_only_when_the_record_says_so(store: Store) -> None:
    stranger = Identity("folder", "ana")
    store.commit_page("s", "folder", [submission("s1", stranger, under_contract=False)])
    assert store.contractors() == [] and [c["key"] for c in store.candidates()] == ["folder:ana"]
    (doc,) = store.deliverables()
    assert (doc["status"], doc["path"], doc["contractor_id"]) == ("not_downloaded", None, None)
    assert not list((store.data_dir / "files").iterdir())

    hired = Identity("folder", "ben", "Ben")
    store.commit_page("s", "folder", [submission("s2", hired, under_contract=True)])
    (ben,) = store.contractors()
    assert (ben["name"], ben["status"]) == ("Ben", "trial")
    work = [d for d in store.deliverables() if d["remote_id"] == "s2"]
    assert work[0]["status"] == "stored" and Path(work[0]["path"]).is_file()


def test_unstated_contract_still_hires_with_a_deprecation_warning(store: Store) -> None:
    with pytest.warns(DeprecationWarning, match=r"set Submission\(under_contract=True\)"):
        store.commit_page("s", "upwork", [submission("s1", Identity("upwork", "~01"))])
    assert [c["identities"] for c in store.contractors()] == [["upwork:~01"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known contractor: nothing to warn about
        store.commit_page("s", "upwork", [submission("s2", Identity("upwork", "~01"))])


def test_message_under_contract_hires_its_sender(store: Store) -> None:
    store.commit_page("s", "folder", [
        Message("m1", WHEN, Identity("email", "ana@example.com", "Ana")),
        Message("m2", WHEN, Identity("email", "ben@example.com", "Ben"), under_contract=True,
                attachments=(Attachment("a.png", data=b"png", remote_id="a"),)),
    ])
    assert [c["name"] for c in store.contractors()] == ["Ben"]
    assert [c["key"] for c in store.candidates()] == ["email:ana@example.com"]
    assert [d["filename"] for d in store.deliverables()] == ["a.png"]


def test_builtin_marketplaces_state_the_contract() -> None:
    root = Path(__file__).resolve().parents[1] / "plugins"
    for path in ("upwork/connector.py", "freelancer/connector.py", "notifications/common.py"):
        assert "under_contract=True" in (root / path).read_text(), path


# -- 4. local files are copied, never moved ----------------------------------------------------


def test_local_files_are_copied_not_moved(tmp_path: Path) -> None:
    root = tmp_path / "drop"
    original = deliver(root, "maria", "0001-logo", {"logo.png": b"PNG v1"}) / "logo.png"
    settings = {"root": str(root), "contractors": {"maria": "maria@example.com"}}
    synced = run_sync(drop, settings, tmp_path / "data")
    assert synced.result.ok and synced.result.deliverables_new == 1
    assert original.read_bytes() == b"PNG v1"  # still there, unchanged
    (doc,) = synced.deliverables()
    stored = Path(doc["path"])
    assert stored.read_bytes() == b"PNG v1" and stored.parent == tmp_path / "data" / "files"
    assert stored.stat().st_ino != original.stat().st_ino
    assert oct(stored.stat().st_mode & 0o777) == "0o600"


# -- 5. plugin state in step with committed pages --------------------------------------------


def test_committed_runs_after_each_stored_page_only(tmp_path: Path) -> None:
    root = tmp_path / "drop"
    for n in range(5):
        deliver(root, "maria", f"{n:04d}", {}, notes=f"note {n}")
    settings = {"root": str(root), "contractors": {"maria": "maria@example.com"}}
    data = tmp_path / "data"
    first = run_sync(drop, settings, data, should_stop=lambda: True)
    assert first.result.stopped and first.result.pages == 1
    log = Store(data).source_dir("test") / "acknowledged.txt"
    assert log.read_text().split() == ["maria/0000", "maria/0001"]
    stored = {m["remote_id"] for m in first.messages()}
    assert set(log.read_text().split()) == stored  # state never ahead of the store
    rest = run_sync(drop, settings, data)
    assert rest.result.messages_new == 3
    assert log.read_text().split() == [f"maria/{n:04d}" for n in range(5)]


def test_page_state_is_committed_with_its_page_and_read_back(tmp_path: Path) -> None:
    root = tmp_path / "drop"
    for n in range(5):
        deliver(root, "maria", f"{n:04d}", {f"f{n}.txt": b"x"})
    settings = {"root": str(root), "contractors": {"maria": "maria@example.com"}}
    data = tmp_path / "data"
    first = run_sync(drop, settings, data, should_stop=lambda: True)
    assert first.result.pages == 1
    state = Store(data).plugin_state("test")
    assert sorted(state.state) == ["maria/0000", "maria/0001"]  # only the committed page
    run_sync(drop, settings, data)
    state = Store(data).plugin_state("test")
    assert sorted(state.state) == [f"maria/{n:04d}" for n in range(5)]
    assert state.lines == 3  # one appended line per page (2 + 2 + 1), no rewrites
    path = Store(data).source_dir("test") / "retainer-state.jsonl"
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    # a file added to a delivery already stored: the state tells, the message comes again
    (root / "maria" / "0001" / "late.txt").write_bytes(b"late")
    again = run_sync(drop, settings, data)
    assert (again.result.messages_new, again.result.messages_updated) == (0, 1)
    assert "late.txt" in {d["filename"] for d in again.deliverables()}
    assert run_sync(drop, settings, data).result.messages_updated == 0


def test_a_torn_last_state_line_is_ignored(tmp_path: Path) -> None:
    from agent.store.pluginstate import PluginState

    folder = tmp_path / "src"
    folder.mkdir()
    state = PluginState(folder)
    state.commit({"a": 1, "b": 2})
    state.commit({"a": None})
    with open(state.path, "ab") as handle:
        handle.write(b'{"c":')  # killed mid-append
    assert PluginState(folder).state == {"b": 2}


def test_host_refuses_state_that_is_not_json() -> None:
    bad = Page([], cursor={"n": 1}, state={"k": {1, 2}})
    assert any("Page.state" in p and "JSON" in p for p in check_page(bad))


# -- 6. versions --------------------------------------------------------------------------------


def test_versions_link_by_contractor_thread_and_stem(tmp_path: Path) -> None:
    root = tmp_path / "drop"
    settings = {"root": str(root), "contractors": {"maria": "maria@example.com"}}
    data = tmp_path / "data"
    deliver(root, "maria", "0001", {"logo-v1.png": b"one", "brief.pdf": b"brief"})
    run_sync(drop, settings, data)
    deliver(root, "maria", "0002", {"logo-v2.png": b"two"})
    deliver(root, "maria", "0003", {"Logo final.png": b"three"})
    synced = run_sync(drop, settings, data)
    docs = {d["filename"]: d for d in synced.deliverables()}
    v1, v2, v3 = docs["logo-v1.png"], docs["logo-v2.png"], docs["Logo final.png"]
    assert (v1["version"], v1["replaces"]) == (1, None)
    assert (v2["version"], v2["replaces"], v2["version_of"]) == (2, v1["id"], v1["id"])
    assert (v3["version"], v3["replaces"], v3["version_of"]) == (3, v2["id"], v1["id"])
    assert docs["brief.pdf"]["version"] == 1
    again = run_sync(drop, settings, data)  # with the cursor reset, nothing changes
    with Store(data).writing() as s:
        s.update_source_state("test", cursor={})
    again = run_sync(drop, settings, data)
    assert again.result.deliverables_new == 0
    assert {d["filename"]: d["version"] for d in again.deliverables()}["Logo final.png"] == 3

    rows = {r["filename"]: r for r in queue(Store(data), overdue_after=timedelta(days=3))}
    assert rows["logo-v2.png"]["version_label"] == "v2 of logo"
    assert rows["Logo final.png"]["version_label"] == "v3 of logo"
    assert rows["brief.pdf"]["version_label"] == ""
    listed = run(write_review_config(tmp_path, data), "review")
    assert "logo-v2.png (v2 of logo)" in listed.stdout, listed.output


def write_review_config(tmp_path: Path, data: Path) -> Path:
    config = tmp_path / "review.toml"
    config.write_text(f'[agent]\ndata_dir = "{data}"\n')
    return config


def test_records_can_name_the_version_they_replace(store: Store) -> None:
    maria_up = Identity("upwork", "~maria")
    store.commit_page("s", "upwork", [
        submission("sub-1", maria_up, under_contract=True, contract_remote_id="c1"),
        Submission("sub-2", WHEN + timedelta(days=1), maria_up,
                   Attachment("rework.pdf", data=b"%PDF 2"), under_contract=True,
                   replaces="sub-1"),
    ])
    docs = {d["remote_id"]: d for d in store.deliverables()}
    assert docs["sub-2"]["replaces"] == docs["sub-1"]["id"] and docs["sub-2"]["version"] == 2


def test_version_marks_are_stripped_from_the_work_name() -> None:
    from agent.store.core import work_stem

    for name in ("logo-v1.png", "Logo_V2.png", "logo final.png", "logo-final-v3.ai",
                 "Logo (1).png", "logo rev2.png", "logo.png"):
        assert work_stem(name) == "logo", name
    assert work_stem("report-2024.pdf") == "report-2024"
    assert work_stem("dev2.txt") == "dev2"


def mail(remote_id: str, thread: str, filename: str, when: datetime) -> Message:
    return Message(remote_id, when, MARIA, thread_remote_id=thread,
                   attachments=(Attachment(filename, data=remote_id.encode(), remote_id="1"),))


def test_mail_versions_link_only_within_a_thread_and_in_time_order(store: Store) -> None:
    store.add_contractor("Maria Lopez", [MARIA])
    store.commit_page("inbox", "imap", [
        mail("<1@x>", "logo", "logo-v1.png", WHEN),
        mail("<2@x>", "other", "logo-v2.png", WHEN + timedelta(hours=1)),  # another thread
        mail("<4@x>", "logo", "logo-v3.png", WHEN + timedelta(hours=3)),
    ])
    store.commit_page("inbox", "imap", [  # an older mail found later: not "v3 of logo"
        mail("<0@x>", "logo", "logo-draft.png", WHEN - timedelta(hours=1))])
    versions = {d["filename"]: (d["version"], d["replaces"]) for d in store.deliverables()}
    ids = {d["filename"]: d["id"] for d in store.deliverables()}
    assert versions == {"logo-draft.png": (1, None), "logo-v1.png": (1, None),
                        "logo-v2.png": (1, None), "logo-v3.png": (2, ids["logo-v1.png"])}


def test_revision_rate_counts_a_new_version_as_changes(tmp_path: Path) -> None:
    root = tmp_path / "drop"
    settings = {"root": str(root), "contractors": {"maria": "maria@example.com"}}
    data = tmp_path / "data"
    deliver(root, "maria", "0001", {"logo-v1.png": b"one", "card.png": b"card"})
    deliver(root, "maria", "0002", {"logo-v2.png": b"two"})
    synced = run_sync(drop, settings, data)
    (maria,) = synced.contractors()
    metrics = compute(Facts.load(Store(data)))[maria["id"]]
    # v1 was answered by v2 (changes, though nobody clicked "changes"); nothing else reviewed
    assert metrics["revision_rate"] == 1.0


# -- 7. the guide and the scaffold -------------------------------------------------------------


def test_scaffold_and_guide_import_from_agent_only() -> None:
    from agent.scaffold import render

    module = render("acme-portal")["retainer_acme_portal.py"]
    guide = (Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md").read_text()
    for text in (module, guide):
        imports = [line for line in text.splitlines()
                   if line.startswith(("from agent", "import agent"))]
        assert imports and all(line.startswith(("from agent import", "from agent.testing import"))
                               or line.strip() == "from agent import (" for line in imports), imports


def test_run_sync_validates_settings_as_a_config_file_would(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="nowhere does not exist"):
        run_sync(drop, {"root": str(tmp_path / "nowhere")}, tmp_path / "data")
