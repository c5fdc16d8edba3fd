"""Durations as the config writes them: ``"90s"``, ``"5m"``, ``"1h"``, ``"2d"`` or seconds.

One parser for every setting that takes one (schedules, review deadlines, notifiers).
Standard library only.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$")
_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
MAX_DURATION = timedelta(days=3650)  # ten years: beyond that a duration is a typo


def parse_duration(value: Any) -> timedelta:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"2d"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f'"{value}" is not a duration; write e.g. "30s", "5m", "1h", "1d"')
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError("a duration must be positive")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f'"{value}" is too long; a duration must be at most 3650d (ten years)')
    return timedelta(seconds=seconds)
