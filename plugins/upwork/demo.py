"""The ``upwork`` platform's part of ``retainer demo``: a local Upwork sandbox.

The sandbox (:mod:`plugins.upwork.sandbox`) serves seeded rooms, contracts and submitted
work while the demo runs; its tokens are pre-issued, standing in for ``retainer auth``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from agent.connector import DemoContext, DemoSource

SECRET_ENV = "RETAINER_DEMO_UPWORK_SECRET"


@contextmanager
def demo(context: DemoContext) -> Iterator[DemoSource]:
    """Start the sandbox for as long as the demo runs."""
    from plugins.upwork.sandbox import start_sandbox

    with start_sandbox(seed=7, threads=5, messages_per_thread=6) as sandbox:
        yield DemoSource(
            "demo-upwork", sandbox.settings(client_secret={"env": SECRET_ENV}),
            env={SECRET_ENV: sandbox.client_secret}, authorize=sandbox.authorize_source,
            live=True)
