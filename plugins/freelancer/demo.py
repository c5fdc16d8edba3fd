"""The ``freelancer`` platform's part of ``retainer demo``: a local Freelancer.com sandbox.

The sandbox (:mod:`plugins.freelancer.sandbox`) serves seeded threads, projects and
milestones while the demo runs, with a token it accepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from agent.connector import DemoContext, DemoSource

TOKEN_ENV = "RETAINER_DEMO_FREELANCER_TOKEN"


@contextmanager
def demo(context: DemoContext) -> Iterator[DemoSource]:
    """Start the sandbox for as long as the demo runs."""
    from plugins.freelancer.sandbox import start_sandbox

    sandbox = start_sandbox(seed=7, threads=5, messages_per_thread=6)
    try:
        yield DemoSource(
            "demo-freelancer", {"token": {"env": TOKEN_ENV}, "base_url": sandbox.base_url},
            env={TOKEN_ENV: sandbox.token}, live=True)
    finally:
        sandbox.stop()
