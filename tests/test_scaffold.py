"""`retainer plugins new` writes a project that installs with pip and passes its own tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import cli
from agent.errors import PluginError
from agent.scaffold import Names, render, write_project
from tests.venvs import Venv


def test_names_follow_the_conventions() -> None:
    assert Names.of("acme-portal") == Names("acme-portal", "retainer-acme-portal",
                                            "retainer_acme_portal", "AcmePortal")
    assert Names.of("retainer-contra").platform == "contra"
    for bad in ("", "Acme Portal", "1password", "acme_portal", "acme--x", "-x"):
        with pytest.raises(PluginError, match="not a usable platform name"):
            Names.of(bad)


def test_rendered_files_compile_and_register_the_entry_point() -> None:
    files = render("contra")
    assert set(files) == {"pyproject.toml", "retainer_contra.py", "tests/test_retainer_contra.py",
                          "README.md"}
    assert '[project.entry-points.retainer]\ncontra = "retainer_contra"' in files["pyproject.toml"]
    for name, text in files.items():
        if name.endswith(".py"):
            compile(text, name, "exec")
    assert "ConnectorContract" in files["tests/test_retainer_contra.py"]


def test_plugins_new_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["plugins", "new", "contra", "--dir", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "already exists and is not empty" in result.output
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_scaffold_installs_and_passes_its_own_tests_in_a_fresh_venv(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["plugins", "new", "acme-portal", "--dir", str(tmp_path / "acme")])
    assert result.exit_code == 0, result.output
    project = tmp_path / "acme"
    assert (project / "retainer_acme_portal.py").is_file()

    venv = Venv.create(tmp_path / "venv")
    venv.pip_install(project, tmp_path / "build")
    installed = tmp_path / "build" / "acme"
    listed = json.loads(venv.retainer("plugins", "--json").stdout)
    acme = next(p for p in listed if p["name"] == "acme-portal")
    assert (acme["version"], acme["platforms"], acme["error"]) == ("0.1.0", ["acme-portal"], "")

    # its own tests, run against the installed module (from outside the project folder)
    done = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(installed / "tests"),
                    cwd=tmp_path)
    assert "8 passed" in done.stdout, done.stdout

    # and `retainer sync` stores what the starter connector reads
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "000001.json").write_text(json.dumps({
        "from": "maria@example.com", "sent_at": "2026-01-05T10:00:00+00:00", "text": "hello"}))
    config = tmp_path / "config.toml"
    config.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n\n[[sources]]\n'
                      f'name = "acme"\nplatform = "acme-portal"\n\n[sources.settings]\n'
                      f'path = "{inbox}"\n')
    venv.retainer("--config", str(config), "sync")
    messages = json.loads(venv.retainer("--config", str(config), "messages", "--json").stdout)
    assert [m["text"] for m in messages] == ["hello"]


def test_write_project_defaults_to_retainer_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    monkeypatch.chdir(tmp_path)
    assert write_project("contra") == tmp_path / "retainer-contra"
    assert (tmp_path / "retainer-contra" / "README.md").is_file()
