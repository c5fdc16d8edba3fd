"""A command loads only the plugins it needs (issue 12 item 6): `retainer sync` of a
Maildir source imports the maildir plugin and no other, once the plugin manifest (which
plugin provides which platforms and hooks) is current; a stale manifest, a hook or a
platform it does not place makes the host load every plugin, as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.plugins import Needs, make_plugin_host

BUILTIN_PLATFORMS = ["freelancer", "imap", "maildir", "upwork"]

_PROBE = """
import json, sys
from agent.cli.root import main
try:
    main({argv!r})
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print("\\n@@" + json.dumps({{"code": code, "plugins": sorted(
    m for m in sys.modules if m.startswith("plugins."))}}))
"""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("RETAINER_LOAD_PLUGINS", "RETAINER_DISABLE_PLUGINS",
                         "PYTHONDONTWRITEBYTECODE")}


def probe(argv: list[str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv)],
                          capture_output=True, text=True, env=_clean_env(), timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.rsplit("\n@@", 1)[1])
    assert result["code"] in (0, None), done.stdout + done.stderr
    return result


def maildir_config(tmp_path: Path, extra: str = "") -> Path:
    maildir = tmp_path / "mail"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    config = tmp_path / "retainer.toml"
    config.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n'
                      'owner_emails = ["me@example.com"]\n\n'
                      f'[[sources]]\nname = "inbox"\nplatform = "maildir"\n'
                      f'[sources.settings]\npath = "{maildir}"\n{extra}')
    return config


def test_a_no_op_sync_imports_only_the_configured_plugin(tmp_path: Path) -> None:
    config = maildir_config(tmp_path)
    first = probe(["--config", str(config), "sync"])  # no manifest yet: every plugin loads
    assert "plugins.imap" in first["plugins"]  # type: ignore[operator]
    assert (tmp_path / "data" / "cache" / "plugins.json").exists()
    os.utime(tmp_path / "mail" / "new")  # a delivery: no quick check (test_quick_sync.py)
    again = probe(["--config", str(config), "sync"])
    loaded = again["plugins"]
    assert isinstance(loaded, list)
    assert "plugins.maildir" in loaded
    assert [m for m in loaded if not m.startswith("plugins.maildir")] == [], loaded


def test_configured_notifiers_load_their_plugin(tmp_path: Path) -> None:
    """[[notifiers]] are checked against the notifier types, so their plugin loads."""
    config = maildir_config(tmp_path, '\n[[notifiers]]\ntype = "desktop"\n')
    probe(["--config", str(config), "sync"])
    loaded = probe(["--config", str(config), "sync"])["plugins"]
    assert "plugins.notifiers" in loaded  # type: ignore[operator]
    assert "plugins.imap" not in loaded  # type: ignore[operator]


def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RETAINER_LOAD_PLUGINS", "RETAINER_DISABLE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)


def test_a_current_manifest_loads_only_what_is_needed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch)
    manifest = tmp_path / "plugins.json"
    needs = Needs(platforms=frozenset({"maildir"}), hooks=frozenset({"source_synced"}))
    full = make_plugin_host(needs=needs, manifest=manifest)
    assert sorted(full.platforms) == BUILTIN_PLATFORMS and not full.partial
    assert manifest.stat().st_mode & 0o777 == 0o600
    host = make_plugin_host(needs=needs, manifest=manifest)
    assert sorted(host.platforms) == ["maildir"] and host.partial
    assert sorted(host.infos) == ["maildir"]
    # a hook asked for later loads the plugins that implement it, and only those
    assert host.mail_formats
    assert "marketplace-mail" in host.infos and "imap" not in host.infos
    # a platform nobody loaded yet: every remaining plugin is loaded to find it
    assert host.platform("imap").name == "imap"
    assert not host.partial
    assert sorted(i.name for i in host.infos_sorted()) == sorted(i.name for i in
                                                                 full.infos_sorted())


def test_a_hook_in_the_manifest_loads_its_plugin(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch)
    manifest = tmp_path / "plugins.json"
    needs = Needs(platforms=frozenset({"maildir"}), hooks=frozenset({"source_synced"}))
    make_plugin_host(needs=needs, manifest=manifest)
    saved = json.loads(manifest.read_text())
    saved["plugins"]["upwork"]["hooks"].append("source_synced")  # as if it implemented it
    manifest.write_text(json.dumps(saved))
    host = make_plugin_host(needs=needs, manifest=manifest)
    assert sorted(host.infos) == ["maildir", "upwork"]


@pytest.mark.parametrize("damage", ["key", "missing plugin", "format", "garbage"])
def test_a_stale_or_damaged_manifest_loads_every_plugin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    _env(monkeypatch)
    manifest = tmp_path / "plugins.json"
    needs = Needs(platforms=frozenset({"maildir"}))
    make_plugin_host(needs=needs, manifest=manifest)
    saved = json.loads(manifest.read_text())
    if damage == "key":  # e.g. the plugin was upgraded or its files edited
        saved["plugins"]["imap"]["key"][2] = "0.0.0-older"
    elif damage == "missing plugin":  # a plugin was installed since
        del saved["plugins"]["imap"]
    elif damage == "format":
        saved["format"] = 999
    manifest.write_text("{not json" if damage == "garbage" else json.dumps(saved))
    host = make_plugin_host(needs=needs, manifest=manifest)
    assert sorted(host.platforms) == BUILTIN_PLATFORMS and not host.partial
    assert make_plugin_host(needs=needs, manifest=manifest).partial  # rewritten: current


def test_a_plugin_file_edited_makes_the_manifest_stale(tmp_path: Path) -> None:
    """The key holds the stamps of the plugin module's files, found without importing."""
    from importlib import metadata

    from agent.plugins import _entry_key

    package = tmp_path / "retainer_probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("X = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        ep = metadata.EntryPoint("probe", "retainer_probe_pkg", "retainer")
        before = _entry_key(ep)
        assert before[3] and before[3][0][0].endswith("__init__.py")
        (package / "more.py").write_text("Y = 2\n")
        assert _entry_key(ep) != before
        assert "retainer_probe_pkg" not in sys.modules  # found, not imported
    finally:
        sys.path.remove(str(tmp_path))


def test_an_unknown_plugin_table_is_reported_with_every_installed_plugin(tmp_path: Path) -> None:
    """A sync's partly loaded host still names every installed plugin in the error."""
    config = maildir_config(tmp_path)
    probe(["--config", str(config), "sync"])  # the manifest
    with config.open("a") as f:
        f.write('\n[plugins.nosuch]\nx = 1\n')
    done = subprocess.run([sys.executable, "-m", "agent", "--config", str(config), "sync"],
                          capture_output=True, text=True, env=_clean_env(), timeout=120,
                          check=False)
    assert done.returncode != 0
    assert 'plugins.nosuch: no installed plugin or platform is called "nosuch"' in done.stderr
    for name in ("imap", "upwork", "marketplace-mail", "notifiers"):
        assert name in done.stderr.split("installed:")[1]


def test_a_platform_nobody_provides_is_reported_with_every_platform(tmp_path: Path) -> None:
    config = maildir_config(tmp_path)
    probe(["--config", str(config), "sync"])  # the manifest
    config.write_text(config.read_text().replace('platform = "maildir"', 'platform = "maildri"'))
    done = subprocess.run([sys.executable, "-m", "agent", "--config", str(config), "sync"],
                          capture_output=True, text=True, env=_clean_env(), timeout=120,
                          check=False)
    assert done.returncode != 0
    assert 'no plugin provides "maildri" (installed: freelancer, imap, maildir, upwork)' in \
        done.stderr
