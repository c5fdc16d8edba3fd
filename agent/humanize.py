"""Sizes and ages as people read them: shared by the command line and the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime


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


def age(stamp: str | None) -> str:
    """How long ago an ISO timestamp was: ``"40m"``, ``"5h"``, ``"12d"``; ``"-"`` if unknown."""
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
