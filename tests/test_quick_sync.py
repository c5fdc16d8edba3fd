"""The quick check of `retainer sync` (issue 12 item 6): after a clean sync of a Maildir
source, a sync that finds none of the folders standing for it changed (nor the config,
the roster, the plugins) skips it without importing pydantic or any plugin, and leaves
the store as a no-op sync does; anything changed takes the normal path.

Every sync runs in a fresh interpreter (this one has imported everything), on real
Maildir folders. A folder changed within 2 s of a sync is "racy" and not trusted, so the
tests move the folders' mtimes a little into the past (each time to a new value) where a
real Maildir would simply be older.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from agent.store import Store

_PROBE = """
import json, sys
from agent.cli.root import main
code = 0
try:
    main({argv!r})
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print("\\n@@" + json.dumps({{"code": code, "pydantic": "pydantic" in sys.modules,
                             "maildir": "plugins.maildir" in sys.modules}}))
"""

MESSAGE = ("From: Ann <ann@example.com>\r\nTo: me@example.com\r\nSubject: {subject}\r\n"
           "Message-ID: <{key}@example.com>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\n"
           "Hello {subject}\r\n")


def run_sync(config: Path, *args: str, env: dict[str, str] | None = None
             ) -> dict[str, Any]:
    """`retainer --config CONFIG sync ARGS` in a fresh process: its exit code, output and
    whether it imported pydantic and the maildir plugin."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("RETAINER_LOAD_PLUGINS", "RETAINER_DISABLE_PLUGINS",
                          "RETAINER_STRICT")}
    clean.update(env or {})
    argv = ["--config", str(config), "sync", *args]
    done = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv)],
                          capture_output=True, text=True, env=clean, timeout=120,
                          check=False, cwd=config.parent)
    assert done.returncode == 0, done.stderr
    out, _, tail = done.stdout.rpartition("\n@@")
    result: dict[str, Any] = json.loads(tail)
    result["out"], result["err"] = out.strip(), done.stderr
    return result


def age(maildir: Path) -> None:
    """Every folder of the Maildir last changed a minute ago (a new value each call)."""
    past = time.time_ns() - 60_000_000_000
    folders = sorted((p for p in [maildir, *maildir.rglob("*")] if p.is_dir()),
                     key=lambda p: -len(p.parts))  # children first: a parent keeps its time
    for i, folder in enumerate(folders):
        os.utime(folder, ns=(past + i, past + i))


def deliver(maildir: Path, key: str, subject: str = "hi") -> Path:
    """Deliver a message as an MDA does: write it in tmp/, rename it into new/."""
    tmp = maildir / "tmp" / key
    tmp.write_text(MESSAGE.format(key=key, subject=subject))
    target = maildir / "new" / key
    os.rename(tmp, target)
    return target


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    maildir = tmp_path / "mail"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    deliver(maildir, "1700000000.M1P1.host", "first")
    age(maildir)
    config = tmp_path / "retainer.toml"
    config.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n'
                      'owner_emails = ["me@example.com"]\n\n'
                      f'[[sources]]\nname = "inbox"\nplatform = "maildir"\n'
                      f'[sources.settings]\npath = "{maildir}"\n')
    return config, maildir


def synced(config: Path) -> dict[str, Any]:
    """A first (normal) sync, which keeps the quick record."""
    first = run_sync(config)
    assert first["maildir"] and first["out"].startswith("inbox: 1 new messages")
    return first


def quick(result: dict[str, Any]) -> bool:
    """Whether that sync took the quick path (it imported neither pydantic nor the plugin)."""
    assert result["maildir"] == result["pydantic"], result
    return not result["maildir"]


def state(tmp_path: Path) -> dict[str, Any]:
    return Store(tmp_path / "data", create=False).source_state("inbox")


def no_op(result: dict[str, Any]) -> bool:
    """Whether it printed what a no-op sync prints (its duration aside, on a busy box)."""
    return re.fullmatch(r"inbox: 0 new messages, 0 new deliverables \(\d+\.\d s\)",
                        result["out"]) is not None


def test_a_no_op_sync_after_a_sync_loads_no_plugin(setup: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    config, _ = setup
    synced(config)
    before = state(tmp_path)
    again = run_sync(config)
    assert quick(again)
    assert again["code"] == 0 and no_op(again) and again["err"] == ""
    after = state(tmp_path)
    assert after["last_success"] >= before["last_success"]
    assert after["cursor"] == before["cursor"]
    assert quick(run_sync(config))  # and again


def test_the_store_after_a_quick_sync_is_as_after_a_normal_no_op_sync(
        setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = setup
    synced(config)
    # a plugin switch set: the quick record does not apply, a normal no-op sync runs
    # (and keeps a record for that same switch)
    switch = {"RETAINER_DISABLE_PLUGINS": "upwork"}
    normal = run_sync(config, env=switch)
    assert not quick(normal) and no_op(normal)
    status_normal = state(tmp_path)
    as_json = run_sync(config, "--json", env=switch)
    assert quick(as_json)
    fast = run_sync(config, env=switch)
    assert quick(fast) and no_op(fast)
    status_quick = state(tmp_path)
    timed = {"last_success", "last_attempt", "last_duration"}
    assert set(status_quick) == set(status_normal)
    assert ({k: v for k, v in status_quick.items() if k not in timed}
            == {k: v for k, v in status_normal.items() if k not in timed})
    assert status_quick["last_success"] == status_quick["last_attempt"]
    [doc] = json.loads(as_json["out"])
    assert doc["ok"] and doc["source"] == "inbox" and doc["platform"] == "maildir"
    assert (doc["messages_new"], doc["pages"], doc["error"], doc["warnings"]) == (0, 0, "", [])
    shown = subprocess.run([sys.executable, "-m", "agent", "--config", str(config), "status",
                            "--json"], capture_output=True, text=True, check=True,
                           env={k: v for k, v in os.environ.items()
                                if k != "RETAINER_DISABLE_PLUGINS"})
    [row] = json.loads(shown.stdout)["sources"]
    assert (row["messages"], row["failures"], row["last_error"], row["warnings"]) == (1, 0,
                                                                                    None, [])


def test_a_delivery_and_a_flag_change_are_seen(setup: tuple[Path, Path]) -> None:
    config, maildir = setup
    synced(config)
    assert quick(run_sync(config))
    deliver(maildir, "1700000001.M2P2.host", "second")  # changes new/ (and tmp/)
    found = run_sync(config)
    assert not quick(found) and found["out"].startswith("inbox: 1 new messages")
    age(maildir)
    assert not quick(run_sync(config))  # the folders' times moved: normal, then kept
    assert quick(run_sync(config))
    # the mail reader shows it: new/ -> cur/ with a flag
    os.rename(maildir / "new" / "1700000001.M2P2.host",
              maildir / "cur" / "1700000001.M2P2.host:2,S")
    moved = run_sync(config)
    assert not quick(moved) and no_op(moved)
    age(maildir)
    run_sync(config)
    assert quick(run_sync(config))
    # a flag changed within cur/ alone
    os.rename(maildir / "cur" / "1700000001.M2P2.host:2,S",
              maildir / "cur" / "1700000001.M2P2.host:2,RS")
    assert not quick(run_sync(config))


def test_a_new_mailbox_is_seen(setup: tuple[Path, Path]) -> None:
    config, maildir = setup
    synced(config)
    assert quick(run_sync(config))
    for sub in ("cur", "new", "tmp"):
        (maildir / ".Clients" / sub).mkdir(parents=True)
    deliver(maildir / ".Clients", "1700000002.M3P3.host", "client")
    found = run_sync(config)
    assert not quick(found) and found["out"].startswith("inbox: 1 new messages")


def test_racy_stamps_are_not_kept(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, maildir = setup
    deliver(maildir, "1700000003.M4P4.host", "just now")
    # new/ changed in the same instant as the scan (dated just after it, as after a clock
    # step): its mtime cannot tell a later delivery in that instant from this one
    later = time.time_ns() + 30_000_000_000
    os.utime(maildir / "new", ns=(later, later))
    first = run_sync(config)
    assert first["out"].startswith("inbox: 2 new messages")
    assert Store(tmp_path / "data", create=False).quick_record("inbox") is None
    assert not quick(run_sync(config))


@pytest.mark.parametrize("change", ["owner_emails", "max_attachment_mb", "source settings",
                                    "contractors", "notifiers"])
def test_a_changed_config_takes_the_normal_path(setup: tuple[Path, Path],
                                                change: str) -> None:
    config, _ = setup
    synced(config)
    assert quick(run_sync(config))
    text = config.read_text()
    if change == "owner_emails":
        text = text.replace('["me@example.com"]', '["me@example.com", "me@work.example"]')
    elif change == "max_attachment_mb":
        text = text.replace("owner_emails", "max_attachment_mb = 5\nowner_emails")
    elif change == "source settings":
        text += "page_size = 50\n"
    elif change == "contractors":
        text = text.replace("[[sources]]", '[[contractors]]\nname = "Ann"\n'
                                           'emails = ["ann@example.com"]\n\n[[sources]]')
    else:
        text += '\n[[notifiers]]\ntype = "desktop"\n'
    config.write_text(text)
    done = run_sync(config)
    assert not quick(done) and done["code"] == 0
    if change != "notifiers":
        assert quick(run_sync(config))  # the new config's record
    else:
        assert not quick(run_sync(config))  # notifiers: never skipped


def test_a_promoted_contractor_takes_the_normal_path(setup: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    config, _ = setup
    synced(config)
    assert quick(run_sync(config))
    subprocess.run([sys.executable, "-m", "agent", "--config", str(config), "contractors",
                    "add", "ann@example.com"], capture_output=True, text=True, check=True)
    assert not quick(run_sync(config))
    assert state(tmp_path).get("backfill") in (None, [])


def test_a_changed_plugin_manifest_takes_the_normal_path(setup: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    config, _ = setup
    synced(config)
    assert quick(run_sync(config))
    manifest = tmp_path / "data" / "cache" / "plugins.json"
    saved = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(saved))  # the same content, rewritten
    assert not quick(run_sync(config))
    assert quick(run_sync(config))
    saved = json.loads(manifest.read_text())
    saved["plugins"]["upwork"]["hooks"].append("source_synced")  # as if it implemented it
    manifest.write_text(json.dumps(saved))
    assert not quick(run_sync(config))
    assert not quick(run_sync(config))  # a plugin hooked into every sync: never skipped


def test_a_failed_sync_takes_the_normal_path(setup: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    config, _ = setup
    synced(config)
    assert quick(run_sync(config))
    lock = FileLock(str(tmp_path / "data" / "sources" / "inbox" / "sync.lock"), timeout=0)
    with lock:  # another process is syncing it: this one fails (normal path, exit 1)
        busy = run_sync(config)
    assert not quick(busy) and busy["code"] == 1 and "another Retainer process" in busy["err"]
    assert state(tmp_path)["failures"] == 1
    retried = run_sync(config)  # the last sync failed: the normal path again
    assert not quick(retried) and no_op(retried)
    assert quick(run_sync(config))


def test_a_moved_cursor_or_a_named_unknown_source_takes_the_normal_path(
        setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = setup
    synced(config)
    assert quick(run_sync(config, "inbox"))
    store = Store(tmp_path / "data", create=False)
    with store.writing():  # e.g. a command that makes the next sync read everything again
        store.update_source_state("inbox", cursor={})
    again = run_sync(config, "inbox")
    assert not quick(again) and no_op(again)  # read again, merged as repeats
    unknown = run_sync(config, "nope")
    assert unknown["code"] != 0 and not unknown["out"].startswith("inbox")


def test_a_sync_without_the_quick_check_forgets_the_record(setup: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    """The daemon's engine keeps no record, and forgets the one a `retainer sync` left
    (its own syncs may change what the record was taken with)."""
    from agent.config import load_config
    from agent.plugins import make_plugin_host
    from agent.sync import SyncEngine

    config, _ = setup
    synced(config)
    store = Store(tmp_path / "data", create=False)
    assert store.quick_record("inbox") is not None
    host = make_plugin_host()
    [result] = SyncEngine(load_config(config, host), host, store).sync_all()
    assert result.ok
    assert store.quick_record("inbox") is None
    assert not quick(run_sync(config))
    assert quick(run_sync(config))


# -- the quick check in this process -----------------------------------------------------
# The syncs above run in fresh interpreters, so they say what a user sees but reach no
# code of this process (nor a mutated copy of it). These call agent.quicksync here, after
# one normal sync (also here) kept the record.


def sync_here(config: Path, *args: str) -> int:
    """`retainer --config CONFIG sync ARGS` in this process; its exit code."""
    from agent.cli.root import main

    try:
        main(["--config", str(config), "sync", *args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def kept(setup: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """``setup`` after a normal sync in this process, which kept the quick record."""
    config, maildir = setup
    assert sync_here(config) == 0
    assert Store(tmp_path / "data", create=False).quick_record("inbox") is not None
    return config, maildir


def test_an_unchanged_source_is_recorded_as_synced_with_nothing_new(
        kept: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from agent.quicksync import quick_sync

    config, _ = kept
    before = state(tmp_path)
    store = Store(tmp_path / "data", create=False)
    with store.writing():  # as a sync that warned or failed before a clean one left it
        store.update_source_state("inbox", warnings=["w"], error_kind="x", platform="old")
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger="retainer.sync"):
        results = quick_sync(config, ())
    took = time.monotonic() - started
    # `retainer sync -v` prints what a no-op sync prints, and says the quick check skipped it
    said = [r.getMessage() for r in caplog.records if "quick check" in r.getMessage()]
    assert [line.startswith("inbox: nothing new (quick check")
            and line.endswith("unchanged since the last sync)") for line in said] == [True]
    assert results is not None
    [result] = results
    assert (result.source, result.platform, result.ok, result.messages_new,
            result.deliverables_new, result.pages) == ("inbox", "maildir", True, 0, 0, 0)
    assert 0 <= result.duration <= took
    after = state(tmp_path)
    assert after["last_success"] == after["last_attempt"] >= before["last_success"]
    assert after["last_duration"] == round(result.duration, 3)
    assert (after["failures"], after["last_error"], after["error_kind"], after["warnings"],
            after["platform"], after["cursor"]) == (0, None, None, [], "maildir",
                                                    before["cursor"])
    assert quick_sync(config, ()) is not None  # the record is still good
    assert [r.source for r in quick_sync(config, ("inbox", "inbox")) or []] == ["inbox"]


def test_another_sources_table_does_not_touch_a_sources_record(
        kept: tuple[Path, Path], tmp_path: Path) -> None:
    """A source's record is valid for the config but the other sources' tables: adding
    or editing another source does not send this one through the normal path."""
    from agent.quicksync import quick_sync

    config, _ = kept
    other = tmp_path / "other"
    config.write_text(config.read_text() + f'\n[[sources]]\nname = "other"\n'
                      f'platform = "maildir"\n[sources.settings]\npath = "{other}"\n')
    assert [r.source for r in quick_sync(config, ("inbox",)) or []] == ["inbox"]
    assert quick_sync(config, ()) is None  # "other" was never synced


def test_the_quick_paths_lock_file_is_private(kept: tuple[Path, Path], tmp_path: Path
                                              ) -> None:
    """The source's sync lock, made again by the quick path when it is gone (a backup
    restored without lock files), is 0600 as the normal path makes it."""
    from agent.quicksync import quick_sync

    config, _ = kept
    lock = tmp_path / "data" / "sources" / "inbox" / "sync.lock"
    lock.unlink()
    assert quick_sync(config, ()) is not None
    assert lock.stat().st_mode & 0o777 == 0o600


def test_the_quick_path_records_utc_times(kept: tuple[Path, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The times it records are UTC, as a normal sync's, wherever the machine's clock is."""
    from agent.quicksync import quick_sync

    config, _ = kept
    monkeypatch.setenv("TZ", "PLUS-14")  # POSIX: 14 hours ahead of UTC
    time.tzset()
    try:
        assert quick_sync(config, ()) is not None
    finally:
        monkeypatch.undo()
        time.tzset()
    recorded = datetime.fromisoformat(state(tmp_path)["last_success"])
    assert abs((datetime.now(UTC) - recorded).total_seconds()) < 600


def _edit(config: Path, old: str, new: str) -> None:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))


@pytest.mark.parametrize("change", [
    "delivery", "owner_emails", "source settings", "notifiers", "plugin switch", "roster",
    "manifest rewritten", "manifest format", "manifest garbage", "failures", "last_error",
    "pending", "backfill", "no success", "cursor", "stamps", "no record", "lock",
    "named unknown", "no store", "bad config", "name not a string"])
def test_anything_changed_takes_the_normal_path(kept: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                change: str) -> None:
    from agent.quicksync import quick_sync

    config, maildir = kept
    data = tmp_path / "data"
    store = Store(data, create=False)
    manifest = data / "cache" / "plugins.json"
    saved = json.loads(manifest.read_text())
    names: tuple[str, ...] = ()
    states: dict[str, dict[str, Any]] = {"failures": {"failures": 1}, "last_error": {"last_error": "boom"},
              "pending": {"pending": ["p"]}, "backfill": {"backfill": ["ann"]},
              "no success": {"last_success": None}, "cursor": {"cursor": {"uid": 1}}}
    if change == "delivery":
        deliver(maildir, "1700000009.M9P9.host", "later")
    elif change == "owner_emails":
        _edit(config, '["me@example.com"]', '["me@example.com", "me@work.example"]')
    elif change == "source settings":
        config.write_text(config.read_text() + "page_size = 50\n")
    elif change == "notifiers":
        config.write_text(config.read_text() + '\n[[notifiers]]\ntype = "desktop"\n')
    elif change == "plugin switch":
        monkeypatch.setenv("RETAINER_DISABLE_PLUGINS", "upwork")
    elif change == "roster":
        roster = store.root / "roster.json"
        later = roster.stat().st_mtime_ns + 1_000_000_000
        os.utime(roster, ns=(later, later))
    elif change == "manifest rewritten":
        manifest.write_text(json.dumps(saved))
    elif change == "manifest format":
        manifest.write_text(json.dumps(dict(saved, format=2)))
    elif change == "manifest garbage":
        manifest.write_text("[1, 2")
    elif change in states:
        with store.writing():
            store.update_source_state("inbox", **states[change])
    elif change == "stamps":
        record = store.quick_record("inbox") or {}
        with store.writing():
            store.save_quick_record("inbox", dict(record, stamps={}))
    elif change == "no record":
        with store.writing():
            store.save_quick_record("inbox", None)
    elif change == "named unknown":
        names = ("inbox", "nope")
    elif change == "no store":
        _edit(config, str(data), str(tmp_path / "elsewhere"))
    elif change == "bad config":
        config.write_text(config.read_text() + "\n[agent\n")
    elif change == "name not a string":  # the normal path says what is wrong with it
        _edit(config, 'name = "inbox"', 'name = ["inbox"]')
    if change == "lock":
        with FileLock(str(data / "sources" / "inbox" / "sync.lock"), timeout=0):
            assert quick_sync(config, names) is None
        assert quick_sync(config, names) is not None  # only while it is held
        return
    before = state(tmp_path)
    assert quick_sync(config, names) is None
    assert state(tmp_path) == before  # nothing recorded


@pytest.mark.parametrize("change", [
    "per-sync hook", "plugin error", "plugin warning", "plugin file size", "plugin file time",
    "plugin file gone", "plugin file entry", "plugin file not a list", "key",
    "entry not a dict", "plugins not a dict", "platform not provided", "not a dict"])
def test_a_plugin_manifest_the_quick_check_cannot_trust(kept: tuple[Path, Path],
                                                         tmp_path: Path, change: str) -> None:
    """The manifest's plugins as the quick check reads them (``_plugins``): any plugin
    hooked into every sync, the source's plugin failing or warning, a plugin file changed
    since it was loaded: no quick check."""
    from agent.quicksync import _plugins

    manifest = tmp_path / "data" / "cache" / "plugins.json"
    saved = json.loads(manifest.read_text())
    found = _plugins(manifest, "maildir")
    assert found is not None
    assert found[1] == sys.path[1:]
    assert [p for p, _ in found[2]] == [p for p in sys.path[1:]
                                        if p.endswith(("site-packages", "dist-packages"))]
    assert all(stamp == [os.stat(p).st_mtime_ns, os.stat(p).st_size, os.stat(p).st_ino,
                         os.stat(p).st_dev] for p, stamp in found[2])
    own = next(e for e in saved["plugins"].values() if "maildir" in e["platforms"])
    other = next(e for e in saved["plugins"].values() if "maildir" not in e["platforms"])
    item = own["key"][3][0]  # [path, size, mtime_ns] of one of its files
    if change == "per-sync hook":  # in any plugin, not only the source's
        other["hooks"] = [*other.get("hooks", []), "source_synced"]
    elif change in ("plugin error", "plugin warning"):
        own[change.removeprefix("plugin ")] = "it said something"
    elif change == "plugin file size":
        item[1] += 1
    elif change == "plugin file time":
        item[2] += 1
    elif change == "plugin file gone":
        item[0] = str(tmp_path / "gone.py")
    elif change == "plugin file entry":
        own["key"][3][0] = item[:2]
    elif change == "plugin file not a list":  # as another version might write it
        own["key"][3][0] = {"path": item[0], "size": item[1], "mtime_ns": item[2]}
    elif change == "key":
        own["key"] = own["key"][:3]
    elif change == "entry not a dict":
        saved["plugins"]["broken"] = ["not", "a", "dict"]
    elif change == "plugins not a dict":
        saved["plugins"] = list(saved["plugins"].values())
    elif change == "platform not provided":
        for entry in saved["plugins"].values():
            entry["platforms"] = [p for p in entry["platforms"] if p != "maildir"]
    else:
        saved = [saved]
    manifest.write_text(json.dumps(saved))
    assert _plugins(manifest, "maildir") is None


def test_a_plugin_manifest_as_loaded_is_trusted(kept: tuple[Path, Path], tmp_path: Path) -> None:
    from agent.quicksync import _plugins

    manifest = tmp_path / "data" / "cache" / "plugins.json"
    saved = json.loads(manifest.read_text())
    for number, entry in enumerate(saved["plugins"].values()):
        if number % 2:
            entry.pop("hooks", None)  # no hooks at all: none of them per sync
        else:
            entry["hooks"] = None
    manifest.write_text(json.dumps(saved))
    found = _plugins(manifest, "maildir")
    st = os.stat(manifest)
    assert found is not None
    assert found[0] == [st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev]


def test_a_distribution_installed_in_dist_packages_is_seen(
        kept: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's Python installs into ``dist-packages`` folders: a plugin installed there
    (here a folder given by PYTHONPATH) changes what the quick record is valid for, as one
    in ``site-packages`` does."""
    from agent.quicksync import _plugins

    manifest = tmp_path / "data" / "cache" / "plugins.json"
    packages = tmp_path / "local" / "dist-packages"
    packages.mkdir(parents=True)
    past = time.time_ns() - 60_000_000_000
    os.utime(packages, ns=(past, past))
    # first after the script's folder, as PYTHONPATH puts it
    monkeypatch.setattr(sys, "path", [sys.path[0], str(packages), *sys.path[1:]])
    before = _plugins(manifest, "maildir")
    assert before is not None and str(packages) in [p for p, _ in before[2]]
    (packages / "retainer_plugin_x").mkdir()
    assert _plugins(manifest, "maildir") != before


def test_no_quick_record_where_notifiers_are_configured(kept: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    """Notifiers run on every sync: with one configured the quick check does not apply
    at all (no environment, so no record is kept), not merely a config that changed."""
    from agent.config.file import read_toml
    from agent.quicksync import environment

    config, _ = kept
    data = read_toml(config)
    store = Store(tmp_path / "data", create=False)
    manifest = tmp_path / "data" / "cache" / "plugins.json"
    [table] = data["sources"]
    assert environment(data, table, store, manifest) is not None
    data["notifiers"] = [{"type": "desktop"}]
    assert environment(data, table, store, manifest) is None


def test_the_sources_a_sync_would_take() -> None:
    from agent.quicksync import chosen_tables

    a, b = {"name": "a"}, {"name": "b", "enabled": False}
    c = {"name": "c", "enabled": True}
    data = {"sources": [a, b, c]}
    assert chosen_tables(data, ()) == [a, c]
    assert chosen_tables(data, ("b", "a", "b")) == [b, a]
    assert chosen_tables(data, ("a", "z")) is None
    assert chosen_tables({}, ()) == []
    assert chosen_tables({"sources": {"name": "a"}}, ()) is None
    assert chosen_tables({"sources": [a, "b"]}, ()) is None


def test_a_cursor_is_kept_as_a_hash_of_its_json() -> None:
    from hashlib import blake2b

    from agent.quicksync import cursor_hash

    def digest(text: bytes) -> str:
        return blake2b(text, digest_size=32).hexdigest()

    assert cursor_hash({"uid": 5, "box": "x"}) == digest(b'{"box":"x","uid":5}')
    assert cursor_hash(None) == cursor_hash({}) == digest(b"{}")
    assert cursor_hash({"at": Path("/p")}) == digest(b'{"at":"/p"}')


def _engine_sync(config: Path, tmp_path: Path, *, stop_after_a_page: bool) -> Any:
    """One sync by a SyncEngine in this process, given the quick environment the CLI gives
    it (as `retainer sync` does), stopped after its first page or not; its result."""
    from agent.config import load_config
    from agent.config.file import read_toml
    from agent.plugins import make_plugin_host
    from agent.quicksync import environment
    from agent.sync import SyncEngine

    data = tmp_path / "data"
    store = Store(data, create=False)
    table = read_toml(config)["sources"][0]
    env = environment(read_toml(config), table, store, data / "cache" / "plugins.json")
    assert env is not None
    host = make_plugin_host()
    paged: list[object] = []
    engine = SyncEngine(load_config(config, host), host, store,
                        should_stop=lambda: stop_after_a_page and bool(paged),
                        on_page=lambda *_: paged.append(1), quick_env={"inbox": env})
    [result] = engine.sync_all()
    return result


def test_a_stopped_sync_keeps_no_record_and_the_next_reads_the_rest(
        kept: tuple[Path, Path], tmp_path: Path) -> None:
    """A sync stopped (Ctrl-C, the daemon stopping) after its first page: the folders'
    stamps are what they were before it read them, so a record kept now would skip the
    messages it did not read; the next `retainer sync` reads them."""
    from agent.quicksync import quick_sync

    config, maildir = kept
    config.write_text(config.read_text() + "page_size = 1\n")
    for n in (2, 3, 4):
        deliver(maildir, f"170000000{n}.M{n}P{n}.host", f"later {n}")
    age(maildir)
    result = _engine_sync(config, tmp_path, stop_after_a_page=True)
    assert result.ok and result.stopped and result.messages_new == 1
    assert quick_sync(config, ()) is None
    assert sync_here(config) == 0
    assert Store(tmp_path / "data", create=False).source_counts()["inbox"]["messages"] == 4



def test_a_source_being_synced_elsewhere_is_reported_busy_here_too(
        kept: tuple[Path, Path], tmp_path: Path) -> None:
    """As test_a_failed_sync_takes_the_normal_path, in this process: the busy source is a
    failed sync that says why (not a crash), and the next one takes the normal path."""
    from agent.quicksync import quick_sync

    config, _ = kept
    with FileLock(str(tmp_path / "data" / "sources" / "inbox" / "sync.lock"), timeout=0):
        assert sync_here(config) == 1
    after = state(tmp_path)
    assert after["failures"] == 1 and "another Retainer process" in after["last_error"]
    assert quick_sync(config, ()) is None
    assert sync_here(config) == 0
    assert quick_sync(config, ()) is not None
