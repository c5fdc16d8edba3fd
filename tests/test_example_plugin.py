"""A third-party plugin, installed with pip into a fresh venv, found, synced and contract-tested."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

from tests.venvs import REPO, Venv

EXAMPLE = REPO / "tests" / "example_plugin"
TOKEN = "venv-example-token"


def _server_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jsonfeed_server", EXAMPLE / "jsonfeed_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("jsonfeed_server", module)
    spec.loader.exec_module(module)
    return module


def test_example_plugin_installs_syncs_and_passes_the_contract_kit(tmp_path: Path) -> None:
    venv = Venv.create(tmp_path / "venv")
    venv.pip_install(EXAMPLE, tmp_path)
    where = venv.run("-c", "import retainer_jsonfeed; print(retainer_jsonfeed.__file__)").stdout
    assert where.startswith(str(tmp_path / "venv")), where

    server = _server_module().FeedServer(TOKEN).start()
    try:
        server.add("Logo drafts attached", files={"logo-v1.svg": b"<svg/>"})
        server.add("Second round tomorrow")
        server.add("Final files", files={"../../logo-final.svg": b"<svg>final</svg>"})
        config = tmp_path / "config.toml"
        config.write_text(f'''
[agent]
data_dir = "{tmp_path / 'data'}"
owner_emails = ["owner@example.com"]

[[contractors]]
name = "Maria Lopez"
emails = ["maria@example.com"]

[[sources]]
name = "portal"
platform = "jsonfeed"

[sources.settings]
url = "{server.url}"
token = {{ env = "PORTAL_TOKEN" }}
page_size = 2
''')
        listed = json.loads(venv.retainer("--config", str(config), "plugins", "--json").stdout)
        feed = next(p for p in listed if p["name"] == "jsonfeed")
        assert feed == {"name": "jsonfeed", "version": "1.2.0", "module": "retainer_jsonfeed",
                        "platforms": ["jsonfeed"], "hooks": ["register_platforms"], "error": "",
                        "warning": ""}

        synced = venv.retainer("--config", str(config), "sync", "--json", PORTAL_TOKEN=TOKEN)
        [result] = json.loads(synced.stdout)
        assert (result["ok"], result["messages_new"], result["deliverables_new"]) == (True, 3, 2)
        messages = json.loads(venv.retainer("--config", str(config), "messages", "--json").stdout)
        assert sorted(m["text"] for m in messages) == [
            "Final files", "Logo drafts attached", "Second round tomorrow"]
        files = json.loads(venv.retainer("--config", str(config), "deliverables", "--json").stdout)
        assert sorted(d["filename"] for d in files) == ["logo-final.svg", "logo-v1.svg"]
        assert TOKEN not in (tmp_path / "data").joinpath("store", "meta.json").read_text()
    finally:
        server.stop()

    # The author's own contract tests pass against the installed plugin (not the source file).
    tests = tmp_path / "author-tests"
    tests.mkdir()
    for name in ("test_jsonfeed.py", "jsonfeed_server.py"):
        shutil.copy(EXAMPLE / name, tests / name)
    done = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests), cwd=tests)
    assert "10 passed" in done.stdout, done.stdout
