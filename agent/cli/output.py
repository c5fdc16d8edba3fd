"""Everything the owner reads on the command line: JSON documents and tables that fit the
terminal. How one value is written (sizes, times, money) is :mod:`agent.humanize`, shared
with the dashboard.

No heavy imports here: this module is loaded by every command.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import click

# -- documents and tables ----------------------------------------------------------------------


def json_bytes(document: Any) -> bytes:
    """One JSON document as :func:`emit_json` prints it (without the final newline)."""
    import orjson

    try:
        return orjson.dumps(document, default=str,
                            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # e.g. text with lone surrogates
        return json.dumps(document, indent=2, ensure_ascii=False, default=str).encode(
            "utf-8", "replace")


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout (orjson: the review queue at 50,000 messages
    would otherwise spend most of its time in the standard library's indenting encoder)."""
    emit_json_bytes(json_bytes(document))


def emit_json_bytes(data: bytes | memoryview) -> None:
    """Print a JSON document already written (:func:`json_bytes`) on stdout."""
    # as bytes: UTF-8 as it is, not decoded, searched for terminal escapes (JSON escapes
    # every control character) and encoded again (a tenth of a 5 MB document's time)
    out = getattr(sys.stdout, "buffer", None)
    if isinstance(data, bytes) or out is None:
        click.echo(bytes(data))
        return
    sys.stdout.flush()  # as click.echo writes bytes: the text layer first, then the bytes
    out.write(data)  # a mapped file's bytes, not copied
    out.write(b"\n")
    out.flush()


def emit_json_list(items: Iterable[Any]) -> None:
    """Print a JSON array item by item (one document on stdout, written as it is read)."""
    import orjson

    click.echo(b"[", nl=False)
    separator = b"\n"
    for item in items:
        try:
            data = orjson.dumps(item, default=str, option=orjson.OPT_INDENT_2)
        except (TypeError, orjson.JSONEncodeError):
            data = json.dumps(item, indent=2, ensure_ascii=False, default=str).encode(
                "utf-8", "replace")
        click.echo(separator + data, nl=False)  # bytes, as emit_json writes them
        separator = b",\n"
    click.echo(b"\n]" if separator != b"\n" else b"]")


class Col(NamedTuple):
    """A table column: ``flex`` ones are cut (with "…") when the terminal is too narrow,
    the highest ``flex`` rank first (``True`` is 1), then the widest; when that is not
    enough, those with a ``drop`` rank are left out, the highest rank first (then the
    rightmost). ``right``: aligned right (numbers)."""

    header: str
    flex: int = 0
    drop: int = 0
    right: bool = False


MAX_CELL = 48  # without a terminal width, cells are cut here (a table stays readable)
#: Longer tables are printed as plain text on a terminal too (same columns, no bold
#: header): rich takes about 0.2-0.3 ms a row (0.8 s for a review queue of 5,000 rows,
#: 0.15 s for a roster of 500), plain text a tenth of that.
RICH_MAX_ROWS = 100
TABLE_CHUNK = 200  # rows per write of a plain table (a write per row costs a flush each)
GAP = 2


def terminal_width() -> int | None:
    """The width tables must fit: ``$COLUMNS``, else stdout's terminal; None when stdout
    is not a terminal (a pipe or a file gets whole rows)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        if sys.stdout.isatty():
            return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
    return None


def fit(cells: list[list[str]], cols: list[Col], width: int | None
        ) -> tuple[list[int], list[int]]:
    """Which columns to show (their indexes) and how wide, so a row fits ``width``.

    Columns keep their natural width while they fit; then flex columns shrink (widest
    first, not below their header or 8), then droppable columns go (highest rank first), then
    every column shrinks down to its header."""
    return _fit([[row[i] for row in cells] for i in range(len(cols))], cols, width)


def _fit(columns: list[list[str]], cols: list[Col], width: int | None
         ) -> tuple[list[int], list[int]]:
    """:func:`fit` of the cells given column by column."""
    natural = [_column_width(c.header, column) for c, column in zip(cols, columns, strict=True)]
    shown = list(range(len(cols)))
    if width is None:
        return shown, natural

    def squeeze(floors: dict[int, int]) -> tuple[list[int], int]:
        widths = {i: natural[i] for i in shown}
        excess = sum(widths.values()) + GAP * (len(shown) - 1) - width
        while excess > 0:
            room = [i for i in shown if widths[i] > floors.get(i, widths[i])]
            if not room:
                break
            i = max(room, key=lambda k: (cols[k].flex, widths[k] - floors[k], k))
            widths[i] -= 1
            excess -= 1
        return [widths[i] for i in shown], excess

    def flex_floors() -> dict[int, int]:
        return {i: min(natural[i], max(len(cols[i].header), 8)) for i in shown if cols[i].flex}

    widths, excess = squeeze(flex_floors())
    droppable = sorted((i for i in shown if cols[i].drop), key=lambda i: (cols[i].drop, i))
    while excess > 0 and droppable:
        shown.remove(droppable.pop())
        widths, excess = squeeze(flex_floors())
    if excess > 0:
        widths, excess = squeeze({i: min(natural[i], max(len(cols[i].header), 3))
                                  for i in shown})
    return shown, widths


def _column_width(header: str, column: list[str]) -> int:
    """The natural width of a column: its widest cell, or its header."""
    if "".join(column).isascii():
        return max(len(header), max(map(len, column), default=0))
    return max([len(header)] + [cell_width(text) for text in column])


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str | Col]) -> None:
    """Print rows as aligned columns that fit the terminal (see :func:`fit`); on a
    terminal through rich (a bold header row) up to :data:`RICH_MAX_ROWS` rows, elsewhere
    (and for longer tables) as plain text."""
    rows = rows if isinstance(rows, list) else list(rows)
    table_columns([[row[i] for row in rows] for i in range(len(headers))], headers,
                  count=len(rows))


def table_columns(columns: Sequence[list[Any]], headers: Sequence[str | Col], *,
                  count: int | None = None) -> None:
    """:func:`table` of cells given column by column (``count`` rows: the columns'
    length), as a listing of thousands of rows builds them: no tuple per row."""
    cols = [h if isinstance(h, Col) else Col(h) for h in headers]
    width = terminal_width()
    limit = None if width else MAX_CELL
    if count is None:
        count = len(columns[0]) if columns else 0
    # column by column: a column of plain short text (nearly all) is checked in one go
    columns = [_texts(column, limit) for column in columns]
    index, widths = _fit(columns, cols, width)
    hidden = len(cols) - len(index)
    shown = [cols[i] for i in index]
    heads = [_cut(c.header.upper(), w) for c, w in zip(shown, widths, strict=True)]
    styled = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    if styled and count <= RICH_MAX_ROWS:
        body = [[_cut(columns[i][r], w) for i, w in zip(index, widths, strict=True)]
                for r in range(count)]
        _rich_table(heads, body, shown, widths)
    else:
        lines = _plain_lines(heads, columns, count, index, widths, shown)
        if styled:  # a long table on a terminal: plain rows under a bold header
            lines[0] = click.style(lines[0], bold=True)
        for start in range(0, len(lines), TABLE_CHUNK):  # a flush per chunk, not per row
            click.echo("\n".join(lines[start:start + TABLE_CHUNK]))
    if hidden:
        click.echo(f"({hidden} column(s) left out to fit {width} columns; widen the terminal "
                   "or use --json)", err=True)


def _texts(column: list[Any], limit: int | None) -> list[str]:
    """A column's cells as text: ``None`` as "", on one line, cut at ``limit``."""
    try:
        joined = "".join(column)  # only text joins
    except TypeError:
        joined = None
    if (joined is not None and joined.isascii() and "\n" not in joined
            and (limit is None or max(map(len, column), default=0) <= limit)):
        return column
    return [c if type(c) is str and (c.isascii() and "\n" not in c
                                     and (limit is None or len(c) <= limit))
            else _cell(c, limit) for c in column]


def _plain_lines(heads: list[str], columns: list[list[str]], count: int, index: list[int],
                 widths: list[int], shown: list[Col]) -> list[str]:
    """The header and every row (``count`` of them) as text: each cell cut to its width
    and padded.

    ASCII cells (nearly all) take ``str.ljust``/``rjust`` and a slice; others are
    measured in terminal columns (:func:`cell_width`). Same text either way."""
    last = len(index) - 1
    out = ["  ".join(_pad(text, w, right=col.right)
                     for text, w, col in zip(heads, widths, shown, strict=True)).rstrip()]
    padded: list[list[str]] = []
    for n, (i, w, col) in enumerate(zip(index, widths, shown, strict=True)):
        texts = columns[i]
        if not "".join(texts).isascii():
            padded.append([_pad(_cut(t, w), w, right=col.right) for t in texts])
            continue
        cut = max(w - 1, 0)  # a cut cell: exactly w wide ("…" alone when w < 1)
        if col.right:
            padded.append([t.rjust(w) if len(t) <= w else t[:cut] + "…" for t in texts])
        elif n == last:  # the line's end is stripped anyway
            padded.append([t if len(t) <= w else t[:cut] + "…" for t in texts])
        else:
            padded.append([t.ljust(w) if len(t) <= w else t[:cut] + "…" for t in texts])
    if not padded:  # every column left out: a blank line per row, as ever
        return out + [""] * count
    out.extend("  ".join(parts).rstrip() for parts in zip(*padded, strict=True))
    return out


def _rich_table(heads: list[str], body: list[list[str]], cols: list[Col],
                widths: list[int]) -> None:
    from rich.console import Console
    from rich.table import Table

    grid = Table(box=None, pad_edge=False, padding=(0, 1), show_edge=False,
                 header_style="bold", collapse_padding=True)
    for head, col, w in zip(heads, cols, widths, strict=True):
        grid.add_column(head, width=w, no_wrap=True, overflow="ellipsis",
                        justify="right" if col.right else "left")
    for row in body:
        grid.add_row(*row)
    total = sum(widths) + GAP * (len(widths) - 1)
    console = Console(file=sys.stdout, width=total + 1, highlight=False,
                      emoji=False, markup=False)
    console.print(grid)


def _cell(value: Any, limit: int | None) -> str:
    text = value if type(value) is str else "" if value is None else str(value)
    if "\n" in text:
        text = text.replace("\n", " ")
    if limit is None or (len(text) <= limit and text.isascii()):
        return text
    return _cut(text, limit)


def cell_width(text: str) -> int:
    """The columns ``text`` takes on a terminal: wide (CJK) characters take two,
    combining marks none."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _cut(text: str, width: int) -> str:
    """``text`` within ``width`` terminal columns, "…" where it was cut."""
    if cell_width(text) <= width:
        return text
    kept = ""
    for ch in text:
        if cell_width(kept + ch) > width - 1:
            break
        kept += ch
    return kept + "…"


def _pad(text: str, width: int, *, right: bool = False) -> str:
    space = " " * max(width - cell_width(text), 0)
    return space + text if right else text + space
