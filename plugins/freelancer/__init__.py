"""The Freelancer.com platform: messages, files, projects, bids and milestones.

Declared in pyproject as ``[project.entry-points.retainer] freelancer = "plugins.freelancer"``.
The local sandbox that tests and ``retainer demo`` use is :mod:`plugins.freelancer.sandbox`.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.connector import NoOptions, Platform
from agent.plugins import hookimpl
from plugins.freelancer.connector import FreelancerConnector
from plugins.freelancer.settings import FreelancerSettings

PLATFORM = Platform(
    "freelancer",
    FreelancerConnector,
    FreelancerSettings,
    "Freelancer.com threads, messages, files, projects, bids and milestones (REST API)",
    options=NoOptions,
)


@hookimpl
def register_platforms(register: Callable[[Platform], None]) -> None:
    register(PLATFORM)


__all__ = ["FreelancerConnector", "FreelancerSettings", "register_platforms"]
