"""Parsing raw message bytes with Python's ``email`` package, the same way on every path.

IMAP and Maildir both hand the whole message to :func:`parse_message`, so a message gives
the same parts whichever way it arrived. Three things happen around the parser:

* header lines without a colon in the middle of a header block (a folded line that lost
  its indentation) are joined to the field before them instead of ending the header;
* folded header values are unfolded when read (RFC 5322 2.2.3), so a boundary or file
  name folded over two lines reads as one value;
* for speed, long runs of base64-like lines and the multipart boundaries are swapped for
  short stand-ins before parsing and put back in every payload after. Neither can change
  what the parser sees (the stand-ins are lines and words of the same kind), which
  tests/test_mail_parse.py checks against a plain parse.
"""

from __future__ import annotations

import re
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email.policy import Compat32
from typing import Any

_FOLD = re.compile(r"\r?\n(?=[ \t])")
# What compat32's feed parser takes for a header line (anything else ends the block).
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")
_BLANK = re.compile(rb"\r?\n\r?\n")
_RUN = re.compile(rb"(?m)(?:^[A-Za-z0-9+/]{40,}={0,2}\r?\n){8,}")
_BOUNDARY = re.compile(rb'(?i)\bboundary\s*=\s*"?([0-9A-Za-z\'()+_,./:=?-]{8,200})')
_STAND_IN = "rtnr."
_STAND_IN_TOKEN = re.compile(r"rtnr\.[rb]\.\d+\.")


class UnfoldingPolicy(Compat32):
    """compat32 (the most tolerant policy), with folded header values unfolded when read."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if "\n" in value:
            value = _FOLD.sub("", value)
        return super().header_fetch_parse(name, value)


POLICY = UnfoldingPolicy()


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
    raw, defects = repair_header(raw.replace(b"\r\n", b"\n"))
    try:
        return fast_parse(raw), defects
    except Exception as exc:  # RecursionError on absurd nesting; compat32 is lenient
        defects.append(f"Unparseable{type(exc).__name__}")
        head, _, body = raw.partition(b"\n\n")
        parsed = BytesHeaderParser(policy=POLICY).parsebytes(head + b"\n\n")
        parsed.set_payload(body)
        return parsed, defects


def plain_parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=POLICY).parsebytes(raw)


def fast_parse(raw: bytes) -> EmailMessage:
    """:func:`plain_parse` with the stand-ins described in the module docstring."""
    if _STAND_IN.encode() in raw:
        return plain_parse(raw)
    originals: dict[str, str] = {}

    def run(match: re.Match[bytes]) -> bytes:
        lines = match.group(0)
        end = b"\r\n" if lines.endswith(b"\r\n") else b"\n"
        token = f"{_STAND_IN}r.{len(originals)}."
        originals[token] = lines[:-len(end)].decode("ascii")
        return token.encode() + end

    reduced = _RUN.sub(run, raw) if len(raw) > 4096 else raw
    boundaries = sorted(set(_BOUNDARY.findall(reduced)), key=len, reverse=True)
    if boundaries and not any(a != b and a in b for a in boundaries for b in boundaries):
        names: dict[bytes, bytes] = {}
        for index, boundary in enumerate(boundaries):
            # the same stand-in names in every message: the parser's compiled boundary
            # patterns are then reused from re's cache instead of compiled per message
            token = f"{_STAND_IN}b.{index}."
            names[boundary] = token.encode()
            originals[token] = boundary.decode("ascii")
        pattern = re.compile(b"|".join(re.escape(b) for b in boundaries))
        reduced = pattern.sub(lambda m: names[m.group(0)], reduced)
    parsed = plain_parse(reduced)
    if originals:
        _restore(parsed, originals)
    return parsed


def _restore(parsed: EmailMessage, originals: dict[str, str]) -> None:
    def back(text: str) -> str:
        return _STAND_IN_TOKEN.sub(lambda m: originals.get(m.group(0), m.group(0)), text)

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
        items = list(part.raw_items())
        if any(isinstance(v, str) and _STAND_IN in v for _, v in items):
            for key in {k.lower() for k, _ in items}:
                del part[key]
            for key, value in items:
                part.set_raw(key, back(value) if isinstance(value, str) else value)
