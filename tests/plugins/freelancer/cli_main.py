"""``python -m tests.plugins.freelancer.cli_main ARGS``: the real ``retainer`` command line
with the Freelancer.com plugin registered even before pyproject declares its entry point."""

from __future__ import annotations

import os
import sys

import plugins.freelancer
from agent.cli import App, build_cli
from agent.config import default_config_path
from agent.plugins import make_plugin_host


def main() -> None:
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")
    args = sys.argv[1:]
    app = App(default_config_path(), False, 0)
    host = make_plugin_host(entrypoints=True)
    if "freelancer" not in host.platforms:
        host.add(plugins.freelancer)
    app._host = host
    group = build_cli(app)
    group.main(args=args, prog_name="retainer", obj=app)


if __name__ == "__main__":
    main()
