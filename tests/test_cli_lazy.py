"""Builtin commands load on first use: a fresh `retainer status` imports the module of
`status` and not those of the other commands; help, "did you mean" and plugins'
commands still see every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from agent.cli.root import BUILTINS, cli

_PROBE = """
import json, sys
from agent.cli.root import main
try:
    main({argv!r})
except SystemExit:
    pass
sys.stdout.flush()
print("\\n@@" + json.dumps(sorted(m for m in sys.modules if m.startswith("agent.cli."))))
"""


def cli_modules(argv: list[str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    loaded: list[str] = json.loads(done.stdout.rsplit("\n@@", 1)[1])
    return loaded


def test_a_command_imports_only_its_own_module(tmp_path):
    config = tmp_path / "retainer.toml"
    config.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n')
    loaded = cli_modules(["--config", str(config), "status"])
    commands = {f"agent.cli.{module}" for module, _ in BUILTINS.values()}
    assert sorted(commands & set(loaded)) == ["agent.cli.syncing"]
    everything = cli_modules(["--help"])
    assert commands <= set(everything)


def test_every_builtin_is_known_by_its_name():
    for name in BUILTINS:
        command = cli.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None and command.name == name


def test_a_mistyped_command_is_matched_against_every_command():
    """In a fresh process, where no command module is loaded yet."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-m", "agent", "instrctions"], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert done.returncode == 2
    assert "Did you mean 'instructions'?" in done.stderr
