"""The Upwork platform: rooms and messages, contracts, offers, milestones and submissions.

Declared in pyproject as ``[project.entry-points.retainer] upwork = "plugins.upwork"``.
Sign a source in with ``retainer auth SOURCE``: the host's command, with the Upwork
OAuth client this platform offers as ``Platform.signin``. ``retainer demo`` starts the
local sandbox (:mod:`plugins.upwork.sandbox`) through ``Platform.demo``.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.connector import NoOptions, Platform
from agent.plugins import hookimpl
from plugins.upwork.connector import UpworkConnector
from plugins.upwork.demo import demo
from plugins.upwork.oauth import signin
from plugins.upwork.settings import UpworkSettings

PLATFORM = Platform(
    "upwork",
    UpworkConnector,
    UpworkSettings,
    "Upwork rooms and messages, contracts, milestones and submitted work (GraphQL API)",
    signin=signin,
    options=NoOptions,
    demo=demo,
)


@hookimpl
def register_platforms(register: Callable[[Platform], None]) -> None:
    register(PLATFORM)


__all__ = ["PLATFORM", "UpworkConnector", "UpworkSettings", "register_platforms"]
