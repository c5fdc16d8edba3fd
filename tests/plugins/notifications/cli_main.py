"""``python -m tests.plugins.notifications.cli_main ARGS``: the real ``retainer`` command
line, with the notifications plugin registered even before pyproject declares its entry
point (once it does, the entry point is used and nothing is added)."""

from __future__ import annotations

import sys

import plugins.notifications
from agent.cli import App, build_cli
from agent.config import default_config_path
from agent.plugins import make_plugin_host


def main() -> None:
    app = App(default_config_path(), False, 0)
    host = make_plugin_host(entrypoints=True)
    if "notifications" not in host.infos:
        host.add(plugins.notifications, name="notifications")
    app._host = host
    build_cli(app).main(args=sys.argv[1:], prog_name="retainer", obj=app)


if __name__ == "__main__":
    main()
