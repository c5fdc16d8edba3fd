"""``python -m tests.support.feed_cli ARGS``: the real ``retainer`` command line with the
test platforms ``feed`` (:mod:`tests.support.feed`) and ``slowfeed``
(:mod:`tests.support.slowfeed`), for tests that need a real process (signals)."""

from __future__ import annotations

import sys

import tests.support.feed as feed
import tests.support.slowfeed as slowfeed
from agent.cli import App, build_cli
from agent.config import default_config_path
from agent.plugins import make_plugin_host


def main() -> None:
    app = App(default_config_path(), False, 0)
    app._host = make_plugin_host(entrypoints=False, extra=[feed, slowfeed])
    build_cli(app).main(args=sys.argv[1:], prog_name="retainer", obj=app)


if __name__ == "__main__":
    main()
