"""Values as people write and read them: sizes, ages, durations, money, percentages.

One way for the command line's tables (:mod:`agent.cli.output`) and the dashboard's Jinja
filters (:mod:`agent.web.filters`). Standard library only: every command loads it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["NONE", "age", "ago", "ago_seconds", "day", "epoch", "hours", "human_size", "money",
           "num", "parse_stamp", "pct", "until"]

NONE = "-"  # what a table shows for "no value"; the dashboard passes an en dash


def human_size(size: int | None) -> str:
    """``1536`` -> ``"1.5 KB"``; ``None`` (size unknown) -> ``"?"``."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def parse_stamp(stamp: Any) -> datetime | None:
    """An ISO timestamp (``Z`` or an offset; naive means UTC) as an aware datetime."""
    if not stamp:
        return None
    try:
        then = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return then if then.tzinfo is not None else then.replace(tzinfo=UTC)


def epoch(stamp: Any) -> float | None:
    """An ISO timestamp as seconds since the epoch (what :func:`ago_seconds` takes), or
    None: kept in read models, so a table of thousands of rows parses no date."""
    then = parse_stamp(stamp)
    return None if then is None else then.timestamp()


def age(stamp: str | None, *, none: str = NONE) -> str:
    """How long ago an ISO timestamp was, compactly (the dashboard writes "ago" after it):
    ``"40m"``, ``"5h"``, ``"12d"``; ``none`` if unknown. Tables use :func:`ago`."""
    then = parse_stamp(stamp)
    if then is None:
        return none
    seconds = (datetime.now(UTC) - then).total_seconds()
    if seconds < 3600:
        return f"{max(seconds, 0) / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _span(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(seconds, 60) / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def ago(stamp: str | None, *, none: str = NONE) -> str:
    """A past moment for a table: ``"just now"``, ``"5 min ago"``, ``"3 h ago"``,
    ``"12 d ago"`` (a future one reads like :func:`until`); ``none`` if unknown."""
    then = parse_stamp(stamp)
    if then is None:
        return none
    return ago_seconds((datetime.now(UTC) - then).total_seconds())


def ago_seconds(seconds: float | None, *, none: str = NONE) -> str:
    """:func:`ago` of a moment ``seconds`` before now (a negative number: after now, read
    like :func:`until`); ``none`` if unknown. For many rows: ``now - epoch(stamp)``."""
    if seconds is None:
        return none
    if seconds < -60:
        return f"in {_span(-seconds)}"
    return "just now" if seconds < 60 else f"{_span(seconds)} ago"


def until(stamp: str | None, *, none: str = NONE) -> str:
    """A planned moment for a table: ``"in 4 min"``, ``"in 2 h"``; ``"due"`` once it
    has passed; ``none`` if unknown."""
    then = parse_stamp(stamp)
    if then is None:
        return none
    seconds = (then - datetime.now(UTC)).total_seconds()
    return "due" if seconds < 30 else f"in {_span(seconds)}"


def hours(value: float | None, *, none: str = NONE) -> str:
    """A duration given in hours: ``"5 h"`` below two days, else ``"3 d"`` / ``"2.5 d"``."""
    if value is None:
        return none
    if value < 48:
        return f"{value:.0f} h"
    return f"{value / 24:.1f} d".replace(".0 d", " d")


def pct(value: float | None, *, none: str = NONE) -> str:
    """A fraction as a percentage: ``0.25`` -> ``"25%"``."""
    return none if value is None else f"{value * 100:.0f}%"


def money(value: float | None, currency: str = "", *, none: str = NONE) -> str:
    """``1234.5`` -> ``"1,234"``; the currency is named unless it is USD."""
    if value is None:
        return none
    return f"{value:,.0f}" + (f" {currency}" if currency and currency != "USD" else "")


def num(value: float | None, digits: int = 1, *, none: str = NONE) -> str:
    """A number with ``digits`` decimals (a rating: ``"4.5"``)."""
    return none if value is None else f"{value:.{digits}f}"


def day(stamp: str | None, *, none: str = NONE) -> str:
    """An ISO timestamp to the minute, as ``2026-03-01 14:05``."""
    return (stamp or "")[:16].replace("T", " ") or none
