"""``python -m tests.plugins.marketplace_mail.cli_main ARGS``: the real ``retainer`` command
line, with the marketplace-mail plugin registered even in a checkout whose entry points
are not installed (when they are, the entry point is used and nothing is added)."""

from __future__ import annotations

import sys

import plugins.marketplace_mail
from agent.cli import App, build_cli
from agent.config import default_config_path
from agent.plugins import make_plugin_host


def main() -> None:
    app = App(default_config_path(), False, 0)
    host = make_plugin_host(entrypoints=True)
    if "marketplace-mail" not in host.infos:
        host.add(plugins.marketplace_mail, name="marketplace-mail")
    app._host = host
    build_cli(app).main(args=sys.argv[1:], prog_name="retainer", obj=app)


if __name__ == "__main__":
    main()
