"""Jinja filters: the command line's own formatting (:mod:`agent.humanize`), with an en
dash for "no value"."""

from __future__ import annotations

from functools import partial
from typing import Any

from flask import Flask

from agent.humanize import age, day, human_size, money, num, pct
from agent.humanize import hours as _hours

DASH = "\u2013"  # an en dash for "no value"

hours = partial(_hours, none=DASH)


def register(app: Flask) -> None:
    filters: dict[str, Any] = {
        "age": age, "hours": hours, "pct": partial(pct, none=DASH),
        "money": partial(money, none=DASH), "num": partial(num, none=DASH),
        "day": day, "size": human_size,
    }
    app.jinja_env.filters.update(filters)
