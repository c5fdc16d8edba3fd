"""Jinja filters: ages, durations, percentages and money, as the command line shows them."""

from __future__ import annotations

from typing import Any

from flask import Flask

from agent.humanize import age
from agent.humanize import human_size as size

DASH = "\u2013"  # an en dash for "no value"


def hours(value: float | None) -> str:
    if value is None:
        return DASH
    if value < 48:
        return f"{value:.0f} h"
    return f"{value / 24:.1f} d".replace(".0 d", " d")


def pct(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.0f}%"


def money(value: float | None, currency: str = "") -> str:
    if value is None:
        return DASH
    return f"{value:,.0f}" + (f" {currency}" if currency and currency != "USD" else "")


def num(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def day(stamp: str | None) -> str:
    return (stamp or "")[:16].replace("T", " ") or "-"


def register(app: Flask) -> None:
    filters: dict[str, Any] = {"age": age, "hours": hours, "pct": pct, "money": money,
                               "num": num, "day": day, "size": size}
    app.jinja_env.filters.update(filters)
