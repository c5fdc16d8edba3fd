"""Meta-tests that keep the hook reference, the guide and the hook tests honest (datasette style)."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from agent import hookspecs
from agent.plugins import make_plugin_host
from tests.venvs import REPO, Venv

GUIDE = REPO / "docs" / "writing-plugins.md"
HOOKS = hookspecs.HOOK_NAMES


def guide_blocks() -> dict[str, str]:
    """The guide's code blocks marked ``<!-- file: NAME -->`` (and ``minimal-plugin``)."""
    text = GUIDE.read_text()
    blocks: dict[str, str] = {}
    pattern = r"<!-- (file: [^>]+|minimal-plugin) -->\n(?:<!-- [^>]+ -->\n)*```\w*\n(.*?)```"
    for match in re.finditer(pattern, text, re.S):
        blocks[match.group(1).removeprefix("file: ").strip()] = match.group(2)
    minimal = re.search(r"<!-- minimal-plugin -->\n```python\n(.*?)```", text, re.S)
    assert minimal, "the guide lost its <!-- minimal-plugin --> block"
    blocks["minimal-plugin"] = minimal.group(1)
    return blocks


def test_there_are_hooks() -> None:
    assert set(HOOKS) >= {"register_platforms", "records_stored", "source_synced"}
    host = make_plugin_host(entrypoints=False)
    assert {n for n in dir(host.pm.hook) if not n.startswith("_")} == set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_docstring_naming_every_parameter(name: str) -> None:
    spec = getattr(hookspecs, name)
    doc = inspect.getdoc(spec) or ""
    assert len(doc.strip()) > 20, f"hook {name} has no docstring: write its reference there"
    for param in inspect.signature(spec).parameters:
        assert f":param {param}:" in doc, f"hook {name}'s docstring omits `:param {param}:`"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str) -> None:
    sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py"))
    assert re.search(rf"def test_hook_{name}\b", sources), (
        f"no test named test_hook_{name}: every hook needs one (see tests/test_plugins.py)")


def test_guide_names_only_hooks_that_exist() -> None:
    text = GUIDE.read_text()
    named = set(re.findall(r"\[`(\w+)`\]\(\.\./agent/hookspecs\.py\)", text))
    named |= set(re.findall(r"@hookimpl\s*\ndef (\w+)", text))
    named |= set(re.findall(r"\b(register_\w+)\b", text))
    unknown = named - set(HOOKS)
    assert not unknown, f"docs/writing-plugins.md names hooks that do not exist: {sorted(unknown)}"
    reference = text.split("## Hook reference", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"\[`(\w+)`\]", reference))
    assert listed == set(HOOKS), f"the guide's hook list drifted from agent/hookspecs.py: {listed}"


def test_guide_minimal_plugin_is_at_most_25_lines() -> None:
    code = guide_blocks()["minimal-plugin"]
    lines = code.rstrip("\n").split("\n")
    assert len(lines) <= 25, f"the guide's minimal plugin is {len(lines)} lines; keep it to 25"
    compile(code, "minimal-plugin", "exec")


def test_every_python_block_in_the_guide_compiles() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    for number, code in enumerate(blocks, 1):
        compile(code, f"writing-plugins.md python block {number}", "exec")


def test_guide_walkthrough_works_in_a_fresh_venv(tmp_path: Path) -> None:
    """The guide's files, as written, install, list, sync, and pass the contract kit."""
    blocks = guide_blocks()
    project = tmp_path / "retainer-inbox-folder"
    for name in ("pyproject.toml", "retainer_inbox_folder.py", "tests/test_inbox_folder.py",
                 "tests/test_inbox_folder_extra.py"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(blocks[name])
    venv = Venv.create(tmp_path / "venv")
    venv.pip_install(project, tmp_path / "build")

    notes = tmp_path / "maria-notes"  # the guide's "~/maria-notes", with HOME=tmp_path
    config = tmp_path / "config.toml"
    config.write_text(blocks["config.toml"])
    home = {"HOME": str(tmp_path)}
    missing = venv.retainer("--config", str(config), "config", "check", check=False, **home)
    assert missing.returncode == 1 and f"{notes} does not exist" in missing.stderr, missing
    notes.mkdir()
    (notes / "001.txt").write_text("Logo drafts are in the shared drive\n")
    listed = json.loads(venv.retainer("--config", str(config), "plugins", "--json").stdout)
    plugin = next(p for p in listed if p["name"] == "inbox-folder")
    assert (plugin["version"], plugin["platforms"], plugin["error"]) == (
        "0.1.0", ["inbox-folder"], "")
    synced = json.loads(venv.retainer("--config", str(config), "sync", "--json", **home).stdout)
    assert [(r["source"], r["ok"], r["messages_new"]) for r in synced] == [("maria-notes", True, 1)]
    again = json.loads(venv.retainer("--config", str(config), "sync", "--json", **home).stdout)
    assert again[0]["messages_new"] == 0
    messages = json.loads(venv.retainer("--config", str(config), "messages", "--json",
                                        **home).stdout)
    assert [m["text"].strip() for m in messages] == ["Logo drafts are in the shared drive"]
    assert messages[0]["contractor_id"]  # Maria, from the roster

    done = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider",
                    str(tmp_path / "build" / project.name / "tests"), cwd=tmp_path)
    assert "8 passed" in done.stdout, done.stdout
