"""Parsing raw message bytes with Python's ``email`` package, the same way on every path.

IMAP and Maildir both hand the whole message to :func:`parse_message`, so a message gives
the same parts whichever way it arrived. Four things happen around the parser:

* header lines without a colon in the middle of a header block (a folded line that lost
  its indentation) are joined to the field before them instead of ending the header;
* folded header values are unfolded when read (RFC 5322 2.2.3), so a boundary or file
  name folded over two lines reads as one value;
* for speed, long base64 bodies and the multipart boundaries are swapped for short
  stand-ins before parsing and put back in every payload after. Neither can change what
  the parser sees (the stand-ins are lines and words of the same kind), which
  tests/test_mail_parse.py checks against a plain parse;
* also for speed, the parts are :class:`Part` objects (compat32's Message with
  Content-Type and parameter parsing cached per header value), which
  tests/test_mail_fastpaths.py holds to compat32's results.
"""

from __future__ import annotations

import email.message
import email.utils
import functools
import re
from collections.abc import Callable
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email.policy import Compat32
from typing import Any

_FOLD = re.compile(r"\r?\n(?=[ \t])")
# What compat32's feed parser takes for a header line (anything else ends the block).
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")
_BLANK = re.compile(rb"\r?\n\r?\n")
_BOUNDARY = re.compile(rb'(?i)\bboundary\s*=\s*"?([0-9A-Za-z\'()+_,./:=?-]{8,200})')
_STAND_IN = "rtnr."


class UnfoldingPolicy(Compat32):
    """compat32 (the most tolerant policy), with folded header values unfolded when read."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if "\n" in value:
            value = _FOLD.sub("", value)
        if isinstance(value, str) and value.isascii():
            return value  # what compat32 returns for a value without surrogate escapes
        return super().header_fetch_parse(name, value)


POLICY = UnfoldingPolicy()

_parseparam: Callable[[str], list[str]] = email.message._parseparam  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=4096)
def _params(value: str) -> tuple[tuple[str, Any], ...]:
    """compat32's ``Message._get_params_preserve`` for one header value."""
    params: list[tuple[str, str]] = []
    for p in _parseparam(value):
        try:
            name, val = p.split("=", 1)
            name = name.strip()
            val = val.strip()
        except ValueError:
            name = p.strip()
            val = ""
        params.append((name, val))
    return tuple(email.utils.decode_params(params))


@functools.lru_cache(maxsize=1024)
def _content_type(value: str) -> str:
    """compat32's ``Message.get_content_type`` for a Content-Type value."""
    ctype = value.split(";", 1)[0].strip().lower()
    return ctype if ctype.count("/") == 1 else "text/plain"


class Part(EmailMessage):
    """compat32's Message, with the parsing of Content-Type and parameter values cached
    by value: the same few values come back in every message, and the parser and the
    reader ask for them many times per part."""

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        value = self.get(header)
        if isinstance(value, str):
            return list(_params(value))
        return super()._get_params_preserve(failobj, header)  # type: ignore[misc]

    def get_content_type(self) -> str:
        value = self.get("content-type")
        if isinstance(value, str):
            return _content_type(value)
        return super().get_content_type()


def repair_header(raw: bytes) -> tuple[bytes, list[str]]:
    """Join colon-less lines inside the header block to the field before them.

    Only lines followed by more header fields before the blank line are joined (a message
    whose body starts without a blank line is left alone). Returns the bytes and a defect
    name per joined line.
    """
    blank = _BLANK.search(raw)
    if blank is None:
        return raw, []
    head = raw[:blank.start()]
    lines = head.splitlines(keepends=True)
    if all(_HEADER_LINE.match(line) for line in lines[1:]):
        return raw, []
    fields = [i for i, line in enumerate(lines) if _HEADER_LINE.match(line)]
    last = fields[-1] if fields else -1
    defects: list[str] = []
    for index in range(1, last):
        if not _HEADER_LINE.match(lines[index]):
            lines[index] = b" " + lines[index]
            defects.append("HeaderLineWithoutColon")
    return b"".join(lines) + raw[blank.start():], defects


def parse_message(raw: bytes) -> tuple[EmailMessage, list[str]]:
    """The parsed message (compat32 objects, :data:`POLICY`) and repair defect names.

    Line endings are made LF first: IMAP sends CRLF, Maildir files mostly hold LF, and
    text parts (bodies, text attachments) must not differ by the way they came.
    """
    if b"\r" in raw:  # the reader hands over LF already: no second pass then
        raw = raw.replace(b"\r\n", b"\n")
    raw, defects = repair_header(raw)
    try:
        return fast_parse(raw), defects
    except Exception as exc:  # RecursionError on absurd nesting; compat32 is lenient
        defects.append(f"Unparseable{type(exc).__name__}")
        head, _, body = raw.partition(b"\n\n")
        parsed = BytesHeaderParser(policy=POLICY).parsebytes(head + b"\n\n")
        parsed.set_payload(body)
        return parsed, defects


def plain_parse(raw: bytes) -> EmailMessage:
    return BytesParser(Part, policy=POLICY).parsebytes(raw)


def fast_parse(raw: bytes) -> EmailMessage:
    """:func:`plain_parse` with the stand-ins described in the module docstring (``raw``
    has LF line endings)."""
    originals: dict[str, str] = {}
    reduced = _collapse_runs(raw, originals) if len(raw) > _RUN_MIN else raw
    # the marker already in the message: parsed plainly. The runs swapped out hold no
    # "." (base64 only), so the message holds the marker iff the reduced bytes hold it
    # more often than the stand-ins put in.
    if reduced.count(_STAND_IN.encode()) != len(originals):
        return plain_parse(raw)
    boundaries = sorted(set(_BOUNDARY.findall(reduced)), key=len, reverse=True)
    if boundaries and not any(a != b and a in b for a in boundaries for b in boundaries):
        for index, boundary in enumerate(boundaries):
            # the same stand-in names in every message: the parser's compiled boundary
            # patterns are then reused from re's cache instead of compiled per message
            token = f"{_STAND_IN}b.{index}."
            reduced = reduced.replace(boundary, token.encode())
            originals[token] = boundary.decode("ascii")
    parsed = plain_parse(reduced)
    if originals:
        _restore(parsed, originals)
    return parsed


#: Base64 bodies shorter than this are parsed as they are.
_RUN_MIN = 2048
_BASE64_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"


def _collapse_runs(raw: bytes, originals: dict[str, str]) -> bytes:
    """Swap each long body made only of base64 lines (from just after a blank line to
    just before the next line starting with ``-``) for one stand-in line."""
    pieces: list[bytes] = []
    pos = search = 0
    while True:
        blank = raw.find(b"\n\n", search)
        if blank < 0:
            break
        start = search = blank + 1
        start += 1
        line_end = raw.find(b"\n", start, start + 100)
        first = raw[start:line_end] if line_end > 0 else b""
        if len(first) < 60 or first.translate(None, _BASE64_BYTES):
            continue  # not the start of a base64 body
        end = raw.find(b"\n-", start)
        if end < 0:
            end = len(raw) - 1 if raw.endswith(b"\n") else len(raw)
        segment = raw[start:end].rstrip(b"\n")  # blank lines before the boundary stay
        end = start + len(segment)
        if (len(segment) >= _RUN_MIN and b"\n\n" not in segment
                and not segment.translate(None, _BASE64_BYTES)):
            token = f"{_STAND_IN}r.{len(originals)}."
            originals[token] = segment.decode("ascii")
            pieces += (raw[pos:start], token.encode())
            pos = end
        search = max(end, start)
        if search >= len(raw):
            break
    if not pieces:
        return raw
    pieces.append(raw[pos:])
    return b"".join(pieces)


def _restore(parsed: EmailMessage, originals: dict[str, str]) -> None:
    """Put the stand-ins' text back into every payload, preamble and epilogue (header
    values keep the boundary stand-ins: nothing reads them after parsing)."""

    def back(text: str) -> str:
        whole = originals.get(text)
        if whole is not None:  # the payload is one stand-in (a base64 body)
            return whole
        for token, original in originals.items():
            if token in text:
                text = text.replace(token, original)
        return text

    stack = [parsed]
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(p for p in payload if isinstance(p, EmailMessage))
        elif isinstance(payload, str) and _STAND_IN in payload:
            part.set_payload(back(payload))
        for name in ("preamble", "epilogue"):
            value = getattr(part, name, None)
            if isinstance(value, str) and _STAND_IN in value:
                setattr(part, name, back(value))
