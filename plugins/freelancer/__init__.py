"""The Freelancer.com platform: messages, files, projects, bids and milestones.

Declared in pyproject as ``[project.entry-points.retainer] freelancer = "plugins.freelancer"``.
``retainer demo`` starts the local sandbox (:mod:`plugins.freelancer.sandbox`, which the
tests use too) through ``Platform.demo``.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.connector import NoOptions, Platform
from agent.plugins import hookimpl
from plugins.freelancer.connector import FreelancerConnector
from plugins.freelancer.demo import demo
from plugins.freelancer.settings import FreelancerSettings

PLATFORM = Platform(
    "freelancer",
    FreelancerConnector,
    FreelancerSettings,
    "Freelancer.com threads, messages, files, projects, bids and milestones (REST API)",
    options=NoOptions,
    demo=demo,
)


@hookimpl
def register_platforms(register: Callable[[Platform], None]) -> None:
    register(PLATFORM)


__all__ = ["FreelancerConnector", "FreelancerSettings", "register_platforms"]
