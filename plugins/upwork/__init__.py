"""The Upwork platform: rooms and messages, contracts, offers, milestones and submissions.

Declared in pyproject as ``[project.entry-points.retainer] upwork = "plugins.upwork"``.
Sign a source in with ``retainer auth SOURCE``. The local sandbox that tests and
``retainer demo`` use is :mod:`plugins.upwork.sandbox`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.connector import NoOptions, Platform
from agent.plugins import hookimpl
from plugins.upwork.connector import UpworkConnector
from plugins.upwork.oauth import signin
from plugins.upwork.settings import UpworkSettings

if TYPE_CHECKING:
    import click

PLATFORM = Platform(
    "upwork",
    UpworkConnector,
    UpworkSettings,
    "Upwork rooms and messages, contracts, milestones and submitted work (GraphQL API)",
    signin=signin,
    options=NoOptions,
)


@hookimpl
def register_platforms(register: Callable[[Platform], None]) -> None:
    register(PLATFORM)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from plugins.upwork.cli import add_auth_command

    add_auth_command(cli)


__all__ = ["UpworkConnector", "UpworkSettings", "register_commands", "register_platforms"]
