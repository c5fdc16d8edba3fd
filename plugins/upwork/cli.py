"""Upwork's command-line additions.

Signing in is host-owned now: ``retainer auth SOURCE`` (see :mod:`agent.oauth`), with the
Upwork client from :func:`plugins.upwork.oauth.signin`. The old spelling
``retainer auth upwork SOURCE`` still works (the host accepts it with a deprecation
notice), so this plugin adds no command of its own any more.
"""

from __future__ import annotations

import click


def add_auth_command(cli: click.Group) -> None:
    """Nothing to add: ``retainer auth`` is the host's (kept for the hook's callers)."""
    return
