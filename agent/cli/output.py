"""Everything the owner reads: JSON documents, tables, progress, and the one way sizes,
ages, durations, money and percentages are written (the dashboard's Jinja filters are
these same functions, see :mod:`agent.web.filters`).

No heavy imports here: this module is loaded by every command, and by the dashboard.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

NONE = "-"  # what a table shows for "no value"; the dashboard passes an en dash


# -- values as people read them ----------------------------------------------------------------


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


def age(stamp: str | None, *, none: str = NONE) -> str:
    """How long ago an ISO timestamp was: ``"40m"``, ``"5h"``, ``"12d"``; ``none`` if unknown."""
    then = parse_stamp(stamp)
    if then is None:
        return none
    seconds = (datetime.now(UTC) - then).total_seconds()
    if seconds < 3600:
        return f"{max(seconds, 0) / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


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


# -- documents and tables ----------------------------------------------------------------------


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout (orjson: the review queue at 50,000 messages
    would otherwise spend most of its time in the standard library's indenting encoder)."""
    import orjson

    try:
        data = orjson.dumps(document, default=str,
                            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # e.g. text with lone surrogates
        data = json.dumps(document, indent=2, ensure_ascii=False, default=str).encode(
            "utf-8", "replace")
    click.echo(data.decode("utf-8"))


def emit_json_list(items: Iterable[Any]) -> None:
    """Print a JSON array item by item (one document on stdout, written as it is read)."""
    import orjson

    click.echo("[", nl=False)
    separator = "\n"
    for item in items:
        try:
            text = orjson.dumps(item, default=str, option=orjson.OPT_INDENT_2).decode()
        except (TypeError, orjson.JSONEncodeError):
            text = json.dumps(item, indent=2, ensure_ascii=False, default=str)
        click.echo(separator + text, nl=False)
        separator = ",\n"
    click.echo("\n]" if separator != "\n" else "]")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print aligned columns (cells are cut to 48 characters)."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= 48 else text[:47] + "…"


def progress_printer() -> Callable[[str, int, int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(source: str, done: int, total: int) -> None:
        percent = 100 * done / total if total else 100.0
        sys.stderr.write(f"\r{source}: {done}/{total} ({percent:.0f}%)   ")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
