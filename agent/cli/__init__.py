"""The ``retainer`` command line, one module per command group.

:mod:`agent.cli.root` holds the group and :func:`main` (the console script);
:mod:`agent.cli.app` what every command is handed; :mod:`agent.cli.output` how results
are printed (JSON, tables, sizes, ages, money). Listing commands take ``--json`` and then
print one JSON document on stdout and nothing else; logs and progress go to stderr.
"""

from __future__ import annotations

from agent.cli.app import App, setup_logging
from agent.cli.root import build_cli, cli, main

__all__ = ["App", "build_cli", "cli", "main", "setup_logging"]
