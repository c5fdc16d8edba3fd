"""Jinja filters: ages, durations, percentages and money, as the command line shows them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask

DASH = "\u2013"  # an en dash for "no value"


def age(stamp: str | None) -> str:
    if not stamp:
        return "-"
    try:
        then = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return "-"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = (datetime.now(UTC) - then).total_seconds()
    if seconds < 3600:
        return f"{max(seconds, 0) / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


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


def size(value: int | None) -> str:
    if value is None:
        return "?"
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def register(app: Flask) -> None:
    filters: dict[str, Any] = {"age": age, "hours": hours, "pct": pct, "money": money,
                               "num": num, "day": day, "size": size}
    app.jinja_env.filters.update(filters)
