"""Parsing raw message bytes with Python's ``email`` package, the same way on every path.

IMAP and Maildir both hand the whole message to :func:`parse_message`, so a message gives
the same parts whichever way it arrived. Five things happen around the parser:

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
  tests/test_mail_fastpaths.py holds to compat32's results;
* plain, well-formed messages (most mail) skip the feed parser: :func:`split_parse`
  builds the same objects directly, which tests/test_mail_parse.py holds to the feed
  parser's results; anything unusual still goes through it.
"""

from __future__ import annotations

import email.message
import email.utils
import functools
import itertools
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
        parsed = split_parse(raw)
        return (parsed if parsed is not None else fast_parse(raw)), defects
    except Exception as exc:  # RecursionError on absurd nesting; compat32 is lenient
        defects.append(f"Unparseable{type(exc).__name__}")
        head, _, body = raw.partition(b"\n\n")
        parsed = BytesHeaderParser(policy=POLICY).parsebytes(head + b"\n\n")
        parsed.set_payload(body)
        return parsed, defects


def plain_parse(raw: bytes) -> EmailMessage:
    """The email package's own parse (compat32 objects, :data:`POLICY`)."""
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


# What the feed parser takes for a header line (anything else ends the block).
_HEADER_TEXT_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")
_PLAIN_CTE = ("7bit", "8bit", "binary")


class _Unusual(Exception):
    """The message is not plain and well-formed: the feed parser reads it."""


def split_parse(raw: bytes) -> EmailMessage | None:
    """:func:`plain_parse` for plain, well-formed messages (``raw`` with LF line endings),
    built directly: headers split at the first blank line, multipart bodies cut at their
    boundary lines with ``str.find``, the same :class:`Part` objects, payloads,
    preambles and epilogues the feed parser gives. None for anything the feed parser
    would read otherwise or note a defect on (CR characters, an envelope line, a header
    line that is not one, no blank line after a header, message/* parts,
    multipart/digest, a multipart without boundary or with a transfer encoding,
    missing or repeated boundary lines); the caller then parses it the usual way.
    tests/test_mail_parse.py holds it to the feed parser's results.
    """
    if b"\r" in raw or raw.startswith(b"From "):
        return None
    text = raw.decode("ascii", "surrogateescape")  # what BytesParser parses
    try:
        return _split_part(text, 0, len(text), None)
    except _Unusual:
        return None


def _split_part(text: str, start: int, end: int, parent: EmailMessage | None) -> EmailMessage:
    """The part in ``text[start:end]`` (a whole message, or a multipart's subpart without
    the line break before the next boundary line's)."""
    if parent is not None and _content_type_of(parent) == "multipart/digest":
        raise _Unusual  # its parts default to message/rfc822
    part = Part(policy=POLICY)
    if start < end and text[start] == "\n":
        body = start + 1  # no header at all
    else:
        blank = text.find("\n\n", start, end)
        if blank < 0:
            raise _Unusual  # the header runs to the end: no separator
        body = blank + 2
        headers = part._headers  # type: ignore[attr-defined]
        source: list[str] = []
        # lines end at LF only (str.splitlines also splits at form feeds and the like)
        for line in text[start:blank].split("\n"):
            line += "\n"
            if not _HEADER_TEXT_LINE.match(line) or line.startswith("From "):
                raise _Unusual  # a line the parser would not take for a header
            first = line[0]
            if first == " " or first == "\t":
                if not source:
                    raise _Unusual  # a continuation with no field to continue
                source.append(line)
                continue
            if source:
                headers.append(_source_field(source))
            if first == ":":
                raise _Unusual  # a field without a name
            source = [line]
        if source:
            headers.append(_source_field(source))
    ctype = part.get_content_type()
    maintype = ctype.split("/", 1)[0]
    if maintype == "message":
        raise _Unusual
    if maintype != "multipart":
        if parent is not None and end > body and text[end - 1] == "\n":
            end -= 1  # the line break before the boundary line is the boundary's
        part._payload = text[body:end]  # type: ignore[attr-defined]
        return part
    boundary = part.get_boundary()
    if boundary is None or str(part.get("content-transfer-encoding", "8bit")).lower() \
            not in _PLAIN_CTE:
        raise _Unusual
    lines = _boundary_lines(text, body, end, "--" + boundary)
    if len(lines) < 2 or lines[0][2] or not lines[-1][2] \
            or any(close for _, _, close in lines[:-1]):
        raise _Unusual  # no start or no close boundary, or lines after the close one
    first_line = lines[0][0]
    if first_line > body:
        part.preamble = _drop_eol(text[body:first_line])
    children: list[EmailMessage] = []
    for (_, after, _), (next_line, _, _) in itertools.pairwise(lines):
        if after == next_line:
            raise _Unusual  # two boundary lines in a row
        child = _split_part(text, after, next_line, part)
        children.append(child)
    part._payload = children  # type: ignore[attr-defined]
    close_end = lines[-1][1]
    # empty when the close line ends the text
    epilogue = text[close_end:end] if text[close_end - 1] == "\n" else ""
    if parent is not None:  # the line break before the parent's next boundary line
        part.epilogue = _drop_eol(epilogue) if epilogue else None
    else:
        part.epilogue = epilogue
    return part


def _content_type_of(part: EmailMessage) -> str:
    return part.get_content_type()


def _drop_eol(value: str) -> str:
    return value[:-1] if value.endswith("\n") else value


def _source_field(source: list[str]) -> tuple[str, str]:
    """compat32's ``header_source_parse``."""
    name, value = source[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(source[1:])
    return name, value.rstrip("\r\n")


def _boundary_lines(text: str, start: int, end: int, separator: str
                    ) -> list[tuple[int, int, bool]]:
    """Every line of ``text[start:end]`` the feed parser takes for a boundary line of
    ``separator`` (the separator, ``--`` for the close one, blanks, the line end):
    ``(line start, next line's start, close)``."""
    found: list[tuple[int, int, bool]] = []
    pos = start
    size = len(separator)
    while pos < end:
        if text.startswith(separator, pos, end):
            tail = pos + size
            line_end = text.find("\n", tail, end)
            stop = end if line_end < 0 else line_end
            rest = text[tail:stop]
            close = rest.startswith("--")
            if close:
                rest = rest[2:]
            if not rest.strip(" \t"):
                found.append((pos, end if line_end < 0 else line_end + 1, close))
        nxt = text.find("\n" + separator, pos, end)
        if nxt < 0:
            break
        pos = nxt + 1
    return found
