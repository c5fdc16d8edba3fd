"""Turning internet mail into :class:`~agent.models.Message` records.

Shared by every mail-based platform (IMAP, Maildir, and plugins that read
notification emails). Parsing never raises on bad input: malformed MIME, unknown
charsets, non-UTF-8 headers and hostile HTML are decoded as well as they can be, and
what was wrong is kept in ``extra["defects"]`` and logged once per message.
"""

from __future__ import annotations

import binascii
import codecs
import dataclasses
import email.utils
import hashlib
import io
import itertools
import logging
import mimetypes
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

from agent.connector import SourceContext
from agent.files import sanitize_filename
from agent.mailparse import parse_message
from agent.models import Attachment, Identity, Message

log = logging.getLogger("retainer.mail")

_MSGID = re.compile(r"<([^<>\s]+)>")
_WS = re.compile(r"[ \t\r\f\v]+")
_SPACE = re.compile(r"\s")  # the characters str.isspace() accepts
_BLANKS = re.compile(r"\n\s*\n\s*\n+")
_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TAGS = re.compile(r"<[^>]*>")
_ACTIVE = re.compile(r"(?i)<(script|iframe|object|embed|applet|frame)\b")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Parts of one message looked at; the rest are skipped with a ``TooManyParts`` defect.
MAX_PARTS = 1000
#: Multipart nesting followed; deeper parts are skipped with a ``TooDeeplyNested`` defect.
MAX_DEPTH = 250
#: Nesting deeper than this is legal but suspicious: noted as a ``DeeplyNested`` defect.
DEEP_NESTING = 20
#: Longest message text kept; the rest is cut with a ``TextTruncated`` defect.
MAX_TEXT_CHARS = 1_000_000
#: Longest HTML body turned into text; the rest is cut with an ``HtmlTruncated`` defect.
MAX_HTML_CHARS = 1_000_000
#: Inline images up to this size are signature logos and the like, not deliverables.
INLINE_IMAGE_MAX = 100 * 1024
#: HTML elements that could run or fetch something; dropped, never run.
ACTIVE_TAGS = ("script", "style", "head", "noscript", "template", "iframe", "object", "embed",
               "frame", "frameset", "applet")

#: Content types that are never a contractor's work: signatures, keys, contact cards,
#: delivery reports, read receipts and calendar invites (an invite is noted on the
#: message instead).
NOT_DELIVERABLE_TYPES = frozenset({
    "application/pgp-signature", "application/pkcs7-signature",
    "application/x-pkcs7-signature", "application/pgp-keys",
    "text/vcard", "text/x-vcard", "text/directory",
    "message/delivery-status", "message/global-delivery-status",
    "message/disposition-notification", "message/global-disposition-notification",
    "text/rfc822-headers", "message/global-headers", "message/feedback-report",
    "text/calendar", "application/ics",
})
_SIGNATURE_SUFFIXES = (".p7s", ".sig", ".asc", ".vcf", ".ics")


def is_signature_name(filename: str) -> bool:
    """True for file names of signatures, contact cards and invites (``smime.p7s``...)."""
    return filename.strip().lower().endswith(_SIGNATURE_SUFFIXES)


def scrub(text: str) -> str:
    """Make ``text`` valid UTF-8 text: undecodable bytes and lone surrogates become U+FFFD,
    NUL characters are dropped."""
    if _SURROGATES.search(text):
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            text = _SURROGATES.sub("\ufffd", text)
    return text.replace("\x00", "")


def header_str(value: Any) -> str:
    """A raw header value as text (compat32 returns ``Header`` objects for 8-bit bytes)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:
        return ""


# Labels mailers use for a codec Python knows under another name, or for its superset
# (as web browsers read them).
_CHARSET_ALIASES = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030",
    "big5": "big5hkscs", "x-x-big5": "big5hkscs", "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949", "iso-8859-8-i": "iso-8859-8", "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6", "iso-8859-6-e": "iso-8859-6", "shift_jis": "cp932",
    "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "tis-620": "cp874",
    "windows-874": "cp874", "utf8": "utf-8", "unicode-1-1-utf-7": "utf-7",
    "us-ascii": "cp1252", "ascii": "cp1252", "iso-8859-1": "cp1252", "latin1": "cp1252",
    "latin-1": "cp1252", "ansi_x3.4-1968": "cp1252",
}
# Single-byte labels that 8-bit UTF-8 text is often mislabelled with.
_WESTERN = frozenset({"cp1252", "windows-1252", "iso-8859-15"})
# Bad bytes tolerated in the declared charset before guessing another (per 100 bytes).
_BAD_PER_100 = 1


def charset_codec(charset: str | None) -> str:
    """The Python codec for a declared charset label (``""`` when unknown)."""
    if not charset:
        return ""
    label = charset.strip().strip('"').lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError, TypeError):
        return ""


def decode_text(raw: bytes, charset: str | None) -> str:
    """Decode text bytes, keeping the valid text when a few bytes are bad; never raises.

    Declared charset first (8-bit text that is valid UTF-8 wins over a Western label);
    with a few bad bytes, each becomes U+FFFD and the rest is kept; when most of it does
    not fit the declared charset (or none is known), charset-normalizer guesses.
    """
    codec = charset_codec(charset)
    if raw.isascii() and codec in ("", "cp1252", "utf-8", "iso8859-15"):
        return raw.decode("ascii").replace("\x00", "")
    candidates = ["utf-8", codec] if codec in _WESTERN or not codec else [codec]
    for candidate in candidates:
        text = _decoded(raw, candidate, "strict")
        if text is not None:
            return scrub(text)
    if codec:
        text = _decoded(raw, codec, "replace")
        if text is not None and text.count("\ufffd") <= max(1, len(raw) * _BAD_PER_100 // 100):
            return scrub(text)
    guessed = _guess(raw) if len(raw) >= _GUESS_MIN else None
    if guessed is not None:
        return scrub(guessed)
    return scrub(_decoded(raw, codec, "replace") or raw.decode("cp1252", "replace"))


def _decoded(raw: bytes, codec: str, errors: str) -> str | None:
    if not codec:
        return None
    try:
        return raw.decode(codec, errors)
    except (LookupError, UnicodeError, ValueError, TypeError):
        return None


#: Shorter texts are too short to guess a charset from.
_GUESS_MIN = 48


def _guess(raw: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(raw).best()
    except Exception:
        return None
    return str(best) if best is not None else None


def decode_header_value(value: Any) -> str:
    """Decode an RFC 2047 header (``=?utf-8?q?...?=``) to one line of text; never raises.

    Raw 8-bit bytes in a header are read as UTF-8, or else as Windows-1252.
    """
    text = header_str(value)
    if text.isascii() and "=?" not in text:
        # Fast path, same result: no encoded words and no 8-bit bytes to decode.
        if text.isprintable():  # no control characters, tabs or line breaks
            return text.strip() if "  " not in text else _WS.sub(" ", text).strip()
        text = _CONTROLS.sub("", text.replace("\r", "").replace("\n", " "))
        return _WS.sub(" ", text).strip()
    return _decode_header_text(text)


def _decode_header_text(text: str) -> str:
    """:func:`decode_header_value` without its fast path (tests compare the two)."""
    text = fix_8bit(text)
    if "=?" in text:
        try:
            text = "".join(_word(chunk, charset) for chunk, charset in decode_header(text))
        except Exception:
            pass
    text = _CONTROLS.sub("", scrub(text).replace("\r", "").replace("\n", " "))
    return _WS.sub(" ", text).strip()


def _word(chunk: bytes | str, charset: str | None) -> str:
    if isinstance(chunk, str):
        return chunk
    if charset is None:  # text between encoded words, as decode_header hands it back
        try:
            return chunk.decode("raw-unicode-escape")
        except UnicodeDecodeError:
            return chunk.decode("latin-1")
    return decode_text(chunk, charset)


def fix_8bit(value: str) -> str:
    """Header text the parser read with surrogate escapes (raw 8-bit bytes) as real text."""
    if not _SURROGATES.search(value):
        return value
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return decode_text(raw, None)


def header_problems(msg: EmailMessage, *, top: bool = True) -> list[str]:
    """Defect names for raw 8-bit bytes, unknown charsets and undecodable encoded words."""
    problems: list[str] = []
    for name, value in msg.raw_items():
        if not isinstance(value, str):
            continue
        if _SURROGATES.search(value):
            problems.append(f"EightBitHeader({name})")
        if top and "=?" in value:
            try:
                words = decode_header(value)
            except Exception:
                problems.append(f"BadEncodedWord({name})")
                continue
            for chunk, charset in words:
                if charset and isinstance(chunk, bytes):
                    problem = _charset_problem(chunk, charset)
                    if problem:
                        problems.append(f"{problem.split('(')[0]}Header({name}: {charset})")
    return problems


def _charset_problem(raw: bytes, charset: str | None) -> str:
    """A defect name when ``raw`` cannot be decoded as ``charset`` (or UTF-8 without one)."""
    if charset is None:
        if not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return "UndeclaredEightBitText"
        return ""
    try:
        codecs.lookup(charset)
    except (LookupError, ValueError, TypeError):
        return f"UnknownCharset({charset[:40]})"
    try:
        raw.decode(charset)
    except Exception:
        return f"UndecodableText({charset[:40]})"
    return ""


def fix_8bit_headers(msg: EmailMessage) -> None:
    """Replace raw 8-bit header values of one part by decoded text, keeping their order."""
    items = list(msg.raw_items())
    if not any(isinstance(v, str) and _SURROGATES.search(v) for _, v in items):
        return
    for name in {k.lower() for k, _ in items}:
        del msg[name]
    for name, value in items:
        msg[name] = fix_8bit(value) if isinstance(value, str) else value


def parse_addresses(values: Iterable[Any]) -> tuple[Identity, ...]:
    """Parse ``From``/``To``/``Cc`` header values into email identities."""
    found: list[Identity] = []
    # addresses are split before encoded words are decoded (RFC 2047 section 5): a
    # decoded name may hold quotes or commas of its own
    raw = [_one_line(fix_8bit(header_str(v))) for v in values if v]
    pairs = _simple_addresses(raw)
    if pairs is None:
        try:
            pairs = email.utils.getaddresses(raw)
        except Exception:
            pairs = []
    for name, addr in pairs:
        addr = addr.strip().strip("<>").lower()
        if not _valid_address(addr):
            continue
        name = decode_header_value(name) if "=?" in name else name
        found.append(Identity("email", addr, name=name.strip().strip('"')))
    if not found and raw:
        # unbalanced quotes and the like: take the bracketed address, else a bare one
        for text in raw:
            for addr in _ANGLE_ADDR.findall(text) or _BARE_ADDR.findall(text):
                addr = addr.lower()
                if _valid_address(addr):
                    name = decode_header_value(text.split("<", 1)[0]) if "<" in text else ""
                    found.append(Identity("email", addr, name=name.strip().strip('"')))
    return tuple(found)


_ANGLE_ADDR = re.compile(r"<([^<>\s@]+@[^<>\s@]+)>")
_BARE_ADDR = re.compile(r"(?<![^\s,;<(])([^\s<>()\[\],;:\"@]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def _valid_address(addr: str) -> bool:
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or _SPACE.search(domain):
        return False
    # spaces only inside a quoted local part ("big bug"@example.com)
    return not _SPACE.search(local) or (local.startswith('"') and local.endswith('"'))


def _one_line(text: str) -> str:
    text = text.replace("\r", "").replace("\n", " ")
    return _WS.sub(" ", text).strip() if not text.isprintable() or "  " in text else text.strip()


# An address made of dot-separated atoms only (no quoting, comments or domain literals),
# optionally after a display name that is one quoted string or plain atoms, in a list
# separated by commas. Values this matches are parsed by `_simple_addresses` with exactly
# the result `email.utils.getaddresses` gives; anything else goes to getaddresses.
_ATOM = r'[^\s()<>@,:;."\[\]\\]+'
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*"
_PHRASE = r'[^\s()<>@,:;"\[\]\\]+(?: [^\s()<>@,:;"\[\]\\]+)*'
_MAILBOX = re.compile(
    rf' ?(?:({_ADDR_SPEC})|(?:"([^"\\]*)"|({_PHRASE}))? ?<({_ADDR_SPEC})>) ?(,|\Z)'
)


def _simple_addresses(texts: list[str]) -> list[tuple[str, str]] | None:
    """``getaddresses(texts)`` for plain ``a@b`` / ``Name <a@b>`` / ``"Name" <a@b>`` lists.

    ``texts`` are decoded header values (one line, whitespace collapsed). Returns None
    as soon as one value is anything else (groups, comments, escapes, empty values...).
    """
    pairs: list[tuple[str, str]] = []
    for text in texts:
        pos = 0
        while True:
            match = _MAILBOX.match(text, pos)
            if match is None:
                return None
            bare, quoted, phrase, routed, comma = match.groups()
            if bare is not None:
                pairs.append(("", bare))
            else:
                pairs.append((quoted if quoted is not None else phrase or "", routed))
            if not comma:
                break
            pos = match.end()
    return pairs


def parse_date(value: Any, fallback: datetime | None = None) -> datetime:
    """Parse a ``Date`` header into an aware datetime (UTC when no zone is given)."""
    if value:
        try:
            parsed = email.utils.parsedate_to_datetime(decode_header_value(value))
        except (TypeError, ValueError, IndexError, OverflowError):
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if fallback is not None and fallback.tzinfo is None:
        return fallback.replace(tzinfo=UTC)
    return fallback or EPOCH


def message_ids(value: Any) -> list[str]:
    """All ``<id@host>`` values in a Message-ID / In-Reply-To / References header."""
    if not value:
        return []
    return _MSGID.findall(decode_header_value(value))


def own_message_id(value: Any) -> str:
    """A Message-ID header's id, also without angle brackets (``id@host``)."""
    ids = message_ids(value)
    if ids:
        return ids[0]
    words = decode_header_value(value).split() if value else []
    return words[0].strip("<>") if words and len(words[0]) > 2 else ""


def received_date(values: Iterable[Any]) -> datetime | None:
    """The date of the first ``Received`` header that has one (after its last ``;``)."""
    for value in values:
        text = decode_header_value(value)
        if ";" not in text:
            continue
        parsed = _date_or_none(text.rsplit(";", 1)[1])
        if parsed is not None:
            return parsed
    return None


def _date_or_none(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(decode_header_value(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def html_to_text(html: str) -> str:
    """Readable text from HTML. Scripts, styles and comments are dropped, never run."""
    return _html_to_text(html)[0]


def _html_to_text(html: str) -> tuple[str, int]:
    """The text of ``html`` and how many active elements (scripts, iframes...) were dropped."""
    from bs4 import BeautifulSoup, Comment

    try:
        soup = BeautifulSoup(html, "html.parser")
        active = soup(list(ACTIVE_TAGS))
        dropped = sum(1 for tag in active if tag.name != "head")
        for tag in active:
            tag.decompose()
        for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
            comment.extract()
        for br in soup.find_all("br"):
            br.replace_with("\n")
        text = soup.get_text("\n")
    except RecursionError:
        # absurdly nested markup: fall back to stripping every tag
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", html)
        dropped = len(_ACTIVE.findall(html))
        text = _TAGS.sub(" ", text)
    lines = [_WS.sub(" ", line).strip() for line in scrub(text).splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip(), dropped


def clean_text(text: str) -> str:
    text = scrub(text).replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


_HEADER_INFO_FIELDS = frozenset(
    {"message-id", "from", "sender", "to", "cc", "references", "in-reply-to", "date", "subject",
     "received"}
)


@dataclass
class HeaderInfo:
    """The parts of a message header Retainer keeps."""

    remote_id: str
    message_id: str
    sender: Identity
    recipients: tuple[Identity, ...]
    sent_at: datetime
    subject: str
    in_reply_to: str
    references: tuple[str, ...]
    thread_remote_id: str
    extra: dict[str, Any] = field(default_factory=dict)
    legacy_remote_id: str = ""  # the id versions before 2026-12 gave this message
    legacy_header_ids: list[str] = field(default_factory=list)  # the same, lacking a Message-ID


def header_info(headers: EmailMessage, raw_header: bytes, fallback_date: datetime | None = None,
                body_digest: bytes = b"") -> HeaderInfo:
    """Extract identity, threading and date from a parsed header block.

    The remote id is the Message-ID (so the same mail seen twice, or under new IMAP
    UIDs after a UIDVALIDITY change, is stored once) or, lacking one, a hash of the
    raw header bytes.
    """
    return _info_from_fields(headers.raw_items(), headers.policy.header_fetch_parse,
                             raw_header, fallback_date, body_digest)


def _as_is(name: str, value: Any) -> Any:
    return value


def _info_from_fields(items: Iterable[tuple[str, Any]], fetch: Any, raw_header: bytes,
                      fallback_date: datetime | None, body_digest: bytes = b"") -> HeaderInfo:
    """:func:`header_info` on raw ``(name, value)`` fields; ``fetch`` is the policy's
    ``header_fetch_parse`` (what ``Message.get`` returns for a raw value)."""
    # One pass over the fields instead of a scan per Message.get (same values: the
    # first field of a name, fetched through the policy).
    fields: dict[str, list[tuple[str, Any]]] = {}
    for name, value in items:
        key = name.lower()
        if key in _HEADER_INFO_FIELDS:
            fields.setdefault(key, []).append((name, value))

    def first(key: str) -> Any:
        found = fields.get(key)
        return fetch(*found[0]) if found else None

    def every(key: str) -> list[Any]:
        return [fetch(name, value) for name, value in fields.get(key, ())]

    message_id = own_message_id(first("message-id"))
    senders = parse_addresses([first("from"), first("sender")])
    sender = senders[0] if senders else Identity("email", "unknown@invalid", name="(no sender)")
    dated = _date_or_none(first("date")) or received_date(every("received"))
    sent_at = dated or parse_date(None, fallback_date)
    if message_id:
        # A Message-ID is not unique (mailers reuse them, tests copy them): the id also
        # names the sender, the date and the content, which a copy in another folder keeps
        # (the arrival time, a fallback for undated mail, may differ there: not used).
        legacy = f"<{message_id}>"
        remote_id = f"{legacy}~{identity_hash(message_id, sender.address, dated, body_digest)}"
    else:
        legacy = ""  # was a hash of header bytes that differed per path: not kept
        remote_id = "sha256:" + hashlib.sha256(
            raw_header.replace(b"\r\n", b"\n").rstrip() + b"\n\n" + body_digest).hexdigest()
    recipients = parse_addresses([*every("to"), *every("cc")])
    references = tuple(message_ids(first("references")))
    in_reply = message_ids(first("in-reply-to"))
    root = references[0] if references else (in_reply[0] if in_reply else message_id)
    thread = f"<{root}>" if root else remote_id
    return HeaderInfo(
        remote_id=remote_id,
        message_id=message_id,
        sender=sender,
        recipients=recipients,
        sent_at=sent_at,
        subject=decode_header_value(first("subject")),
        in_reply_to=in_reply[0] if in_reply else "",
        references=references,
        thread_remote_id=thread,
        legacy_remote_id=legacy,
    )


def identity_hash(message_id: str, sender: str, sent_at: datetime | None,
                  body_digest: bytes = b"") -> str:
    """What tells two messages with the same Message-ID apart (12 hex digits): sender,
    date and the digest of the whole message, which a copy in another folder keeps (line
    endings aside)."""
    stamp = "" if sent_at is None else (
        sent_at.astimezone(UTC).isoformat() if sent_at.tzinfo else sent_at.isoformat())
    text = f"{message_id}\x00{sender.lower()}\x00{stamp}\x00"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass") + body_digest).hexdigest()[:12]


def parse_header_bytes(raw_header: bytes, fallback_date: datetime | None = None) -> HeaderInfo:
    """Parse only a header block (as IMAP ``BODY[HEADER]`` returns it)."""
    return _info_from_fields(header_fields(raw_header), _as_is, raw_header, fallback_date)


# What compat32's feed parser takes for a header line (anything else ends the block).
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")


def header_fields(raw_header: bytes) -> list[tuple[str, str]]:
    """The ``(name, value)`` fields of a header block, as ``BytesHeaderParser`` with the
    compat32 policy reads them followed by :func:`fix_8bit_headers`, without building a
    Message (this runs once per synced mail). tests/test_mail_fastpaths.py holds it to
    the parser's results.
    """
    lines = io.StringIO(raw_header.decode("ascii", "surrogateescape"), newline="").readlines()
    end = 0
    for line in lines:  # the block ends at the first line that is not a header line
        if not _HEADER_LINE.match(line):
            break
        end += 1
    fields: list[tuple[str, str]] = []
    source: list[str] = []  # the lines of the field being read
    for line in lines[:end]:
        if line[0] in " \t":  # a continuation (dropped when there is no field to continue)
            if source:
                source.append(line)
            continue
        if source:
            fields.append(_field(source))
            source = []
        if line.startswith("From "):  # an envelope ("unix from") line is not a field
            continue
        colon = line.find(":")
        if colon > 0:  # a line starting with ":" has no name and is dropped
            source = [line]
    if source:
        fields.append(_field(source))
    if not raw_header.isascii():  # raw 8-bit bytes arrive as surrogate escapes
        fields = [(name, fix_8bit(value)) for name, value in fields]
    return fields


def _field(source: list[str]) -> tuple[str, str]:
    """compat32's ``header_source_parse``."""
    name, value = source[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(source[1:])
    return name, value.rstrip("\r\n")


#: The header fields versions before 2026-12 fetched over IMAP (``BODY[HEADER.FIELDS]``).
_OLD_IMAP_FIELDS = frozenset({b"date", b"from", b"sender", b"to", b"cc", b"subject",
                              b"message-id", b"in-reply-to", b"references"})


def old_header_ids(raw: bytes) -> list[str]:
    """The ids versions before 2026-12 could have given a message without a Message-ID
    (``raw`` with LF line endings): the sha256 of its header block as a Maildir file held
    it (LF or CRLF), or of the header fields they fetched over IMAP as the server returns
    them (those lines in their order, CRLF, then a blank line). A store written then keeps
    those ids when the message is read again (on either path: the list is the same)."""
    header, _ = split_header(raw)
    lines = header.split(b"\n")
    kept: list[bytes] = []
    keep = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line + b"\r\n")
            continue
        name, colon, _ = line.partition(b":")
        keep = bool(colon) and name.strip().lower() in _OLD_IMAP_FIELDS
        if keep:
            kept.append(line + b"\r\n")
    return ["sha256:" + hashlib.sha256(block).hexdigest()
            for block in (header, b"\r\n".join(lines), b"".join(kept) + b"\r\n")]


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """Split raw message bytes at the first blank line into header and body."""
    for sep in (b"\r\n\r\n", b"\n\n") if b"\r" in raw else (b"\n\n",):
        end = raw.find(sep)
        if end >= 0:
            return raw[:end], raw[end + len(sep):]
    return raw, b""


def _disposition(part: EmailMessage) -> str:
    return header_str(part.get("Content-Disposition")).split(";")[0].strip().lower()


def part_filename(part: EmailMessage) -> str:
    """The attachment's name from Content-Disposition or Content-Type, decoded."""
    try:
        name: Any = part.get_filename()
    except Exception:
        name = None
    if name is None:
        try:
            name = part.get_param("name", header="content-type")
            if isinstance(name, tuple):
                name = email.utils.collapse_rfc2231_value(name)
        except Exception:
            name = None
    return decode_header_value(name) if name else ""


def _raw_name_has_nul(part: EmailMessage) -> bool:
    try:
        raw: Any = part.get_filename()
        if raw is None:
            raw = part.get_param("name", header="content-type")
            if isinstance(raw, tuple):
                raw = email.utils.collapse_rfc2231_value(raw)
    except Exception:
        return False
    raw = header_str(raw)
    return "\x00" in raw or "=00" in raw


def is_attachment(part: EmailMessage, filename: str | None = None,
                  content_type: str | None = None) -> bool:
    """A file rather than text of the message (``filename``, ``content_type``: the
    part's, when already known)."""
    disposition = _disposition(part)
    if disposition == "attachment":
        return True
    content_type = content_type or part.get_content_type()
    if content_type in ("text/plain", "text/html"):
        return False  # named or not, text shown in the message is its body
    named = bool(part_filename(part) if filename is None else filename)
    maintype = content_type.split("/", 1)[0]
    if maintype in {"text", "multipart", "message"} and not named:
        return False
    return named or maintype not in {"text", "multipart"}


def is_inline_image(part: EmailMessage, size: int | None = None) -> bool:
    """Signature logos and other images shown inside the message body.

    An image shown inline but larger than :data:`INLINE_IMAGE_MAX` bytes is treated as
    an attachment: Apple Mail and others show pasted work (a design, a photo) inline.
    """
    disposition = _disposition(part)
    return (
        part.get_content_maintype() == "image"
        and disposition != "attachment"
        and (disposition == "inline" or bool(part.get("Content-ID")))
        and (size is None or size <= INLINE_IMAGE_MAX)
    )


def walk_parts(root: EmailMessage, defects: list[str]) -> Iterator[tuple[int, EmailMessage]]:
    """Every part of ``root`` depth-first with its index, without recursion.

    Stops after :data:`MAX_PARTS` parts and does not descend below :data:`MAX_DEPTH`
    levels; each limit hit adds a defect name to ``defects``.
    """
    stack: list[tuple[EmailMessage, int]] = [(root, 0)]
    index = 0
    while stack:
        part, depth = stack.pop()
        if index >= MAX_PARTS:
            defects.append("TooManyParts")
            return
        yield index, part
        index += 1
        if not part.is_multipart() or part.get_content_type() in NOT_DELIVERABLE_TYPES:
            continue  # a delivery report's header blocks are not parts of the message
        if depth >= MAX_DEPTH:
            defects.append("TooDeeplyNested")
            continue
        if depth == DEEP_NESTING:
            defects.append("DeeplyNested")
        children = part.get_payload()
        if isinstance(children, list):
            stack.extend((child, depth + 1) for child in reversed(children)
                         if isinstance(child, EmailMessage))


def message_from_bytes(
    raw: bytes,
    context: SourceContext,
    *,
    fallback_date: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> Message:
    """Parse one whole RFC 822 message into a :class:`Message` with its attachments.

    The one reader of mail: IMAP and Maildir both call it with the message's bytes.
    Attachments are downloaded (kept in memory) only when ``context.wants_attachments``
    says the sender is a contractor and the part is under ``max_attachment_bytes``;
    otherwise they are recorded with a status that says why. Never raises on bad input.
    """
    raw = crlf_to_lf(raw)  # line endings aside, IMAP and Maildir agree
    raw_header, _ = split_header(raw)
    parsed, defects = parse_message(raw)
    eight_bit = not raw.isascii()
    if eight_bit or b"=?" in raw_header:
        defects.extend(header_problems(parsed))
        fix_8bit_headers(parsed)
    # the whole message: a copy in another folder has the same
    body_digest = hashlib.sha256(memoryview(raw)[:_stripped_length(raw)]).digest()
    info = header_info(parsed, raw_header, fallback_date, body_digest)
    if not info.message_id:
        info.legacy_header_ids = old_header_ids(raw)
    wants = context.wants_attachments(info.sender) and not context.is_owner(info.sender)
    where = f"{context.source}: message {info.remote_id}"
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    parts: list[EmailMessage] = []
    invite: dict[str, str] = {}
    for index, part in walk_parts(parsed, defects):
        parts.append(part)
        if index and eight_bit:
            defects.extend(header_problems(part, top=False))
            fix_8bit_headers(part)
        content_type = part.get_content_type()
        if part.is_multipart() and content_type not in NOT_DELIVERABLE_TYPES:
            continue
        filename = part_filename(part)
        if content_type in NOT_DELIVERABLE_TYPES or is_signature_name(filename):
            if content_type in ("text/calendar", "application/ics") and not invite:
                invite = _invite(part)
            attachments.append(_not_work(part, index))
            continue
        if content_type == "application/ms-tnef" or filename.lower() == "winmail.dat":
            attachments.extend(_tnef(part, index, wants, context, where, defects))
            continue
        if is_attachment(part, filename, content_type):
            attachments.append(_attachment(part, index, wants, context, where, filename,
                                           content_type))
            continue
        payload = _payload(part)
        if payload is None:
            continue
        charset = _charset(part)
        problem = _charset_problem(payload, charset)
        if problem:
            defects.append(problem)
        text = decode_text(payload, charset)
        (html if part.get_content_subtype() == "html" else plain).append(text)
    for part in parts:  # after decoding: bad base64 is only noticed then
        defects.extend(type(d).__name__ for d in part.defects)
    html_text = "\n".join(html)
    if plain:
        text = clean_text("\n\n".join(plain))
        dropped = len(_ACTIVE.findall(html_text))  # the HTML is kept unrendered
    else:
        if len(html_text) > MAX_HTML_CHARS:
            html_text = html_text[:MAX_HTML_CHARS]
            defects.append("HtmlTruncated")
        text, dropped = _html_to_text(html_text)
    if dropped:
        log.warning("%s: dropped %d script/iframe/object element(s) from its HTML; "
                    "they were not run", where, dropped)
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS]
        defects.append("TextTruncated")
    merged_extra = mail_extra(info, defects)
    if invite:
        merged_extra["invite"] = invite
    merged_extra.update(extra or {})
    if defects:
        log.warning("%s has MIME defects (%s); kept what could be read",
                    where, ", ".join(sorted(set(defects))))
    return build_message(info, text, attachments, merged_extra,
                         html=scrub(html_text)[:MAX_TEXT_CHARS])


def too_large_message(head: bytes, size: int, limit: int, fallback_date: datetime | None,
                      extra: dict[str, Any]) -> Message:
    """A message over the size cap, kept by its header (``head``: its first bytes)."""
    raw_header, _ = split_header(head)
    info = parse_header_bytes(raw_header, fallback_date=fallback_date)
    placeholder = Attachment(
        "message.eml", "message/rfc822", size=size, remote_id="whole-message",
        status="too_large", note=f"message over the {limit} byte cap; not read",
    )
    return Message(
        remote_id=info.remote_id, sent_at=info.sent_at, sender=info.sender,
        subject=info.subject, text="", thread_remote_id=info.thread_remote_id,
        recipients=info.recipients, attachments=(placeholder,),
        extra={"message_id": info.message_id, "legacy_remote_id": info.legacy_remote_id,
               "too_large": size, **extra},
    )


_ICS_FIELD = re.compile(r"(?im)^(SUMMARY|DTSTART|LOCATION|METHOD)(?:;[^:\r\n]*)?:(.*(?:\r?\n[ \t].*)*)")


def _invite(part: EmailMessage) -> dict[str, str]:
    """What a calendar invite is about (summary, start, location, method)."""
    payload = _payload(part) or b""
    text = decode_text(payload[:200_000], _charset(part) or "utf-8")
    found: dict[str, str] = {}
    for name, value in _ICS_FIELD.findall(text):
        key = name.lower()
        if key not in found:
            found[key] = re.sub(r"\r?\n[ \t]", "", value).strip()[:500]
    return found or {"summary": ""}


def _not_work(part: EmailMessage, index: int) -> Attachment:
    """A signature, contact card, report or invite: listed, never a deliverable."""
    content_type = scrub(part.get_content_type())
    filename = part_filename(part) or f"part-{index}"
    return Attachment(filename, content_type, size=_estimate_size(part),
                      remote_id=f"part-{index}", status="not_downloaded",
                      note="not work: a signature, contact card, report or invite")


def _tnef(part: EmailMessage, index: int, wants: bool, context: SourceContext, where: str,
          defects: list[str]) -> list[Attachment]:
    """The files inside an Outlook winmail.dat (TNEF), each its own attachment."""
    data = _payload(part) or b""
    try:
        from tnefparse import TNEF

        files = [(str(a.long_filename() or a.name or ""), bytes(a.data))
                 for a in TNEF(data).attachments]
    except Exception:
        defects.append("UnreadableTnef")
        return [_attachment(part, index, wants, context, where)]
    found: list[Attachment] = []
    for number, (name, content) in enumerate(files, 1):
        filename = decode_header_value(name) or f"part-{index}-{number}"
        remote_id = f"part-{index}-{number}"
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if not wants:
            found.append(Attachment(filename, content_type, size=len(content),
                                    remote_id=remote_id, status="not_downloaded"))
        elif len(content) > context.max_attachment_bytes:
            found.append(Attachment(filename, content_type, size=len(content),
                                    remote_id=remote_id, status="too_large",
                                    note=f"over the {context.max_attachment_bytes} byte cap"))
        else:
            found.append(Attachment(filename, content_type, size=len(content), data=content,
                                    remote_id=remote_id))
    return found


def _anyone(identity: Identity) -> bool:
    return True


def backfill_context(context: SourceContext) -> SourceContext:
    """``context`` for reading messages again for a promotion backfill: their files are
    downloaded whoever sent the email (a marketplace's notification about the person
    just promoted comes from the marketplace's own address)."""
    return dataclasses.replace(context, wants_attachments=_anyone)


def backfilled(message: Message) -> Message:
    """``message`` read again for a promotion backfill: its files enter the review queue
    with their own dates, whatever the first-import cut-off."""
    return dataclasses.replace(message, extra={**message.extra, "backfill": True})


def build_message(info: HeaderInfo, text: str, attachments: Iterable[Attachment],
                  extra: dict[str, Any], *, html: str = "") -> Message:
    return Message(
        remote_id=info.remote_id,
        sent_at=info.sent_at,
        sender=info.sender,
        subject=info.subject,
        text=text,
        thread_remote_id=info.thread_remote_id,
        recipients=info.recipients,
        attachments=tuple(attachments),
        extra=extra,
        html=html,
    )


def mail_extra(info: HeaderInfo, defects: list[str]) -> dict[str, Any]:
    """The ``extra`` a mail message keeps: threading headers and MIME defects."""
    extra: dict[str, Any] = {"message_id": info.message_id}
    if info.legacy_remote_id:
        extra["legacy_remote_id"] = info.legacy_remote_id
    if info.legacy_header_ids:
        extra["legacy_header_ids"] = info.legacy_header_ids
    if info.in_reply_to:
        extra["in_reply_to"] = info.in_reply_to
    if info.references:
        extra["references"] = list(info.references)
    if defects:
        extra["defects"] = sorted(set(defects))
    return extra


def _charset(part: EmailMessage) -> str | None:
    try:
        charset = part.get_content_charset()
    except Exception:
        return None
    return charset if isinstance(charset, str) and "\x00" not in charset else None


_RSTRIPPED = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.rstrip() strips


def _stripped_length(raw: bytes) -> int:
    """``len(raw.rstrip())`` without copying ``raw``."""
    end = len(raw)
    while end and raw[end - 1] in _RSTRIPPED:
        end -= 1
    return end


def crlf_to_lf(raw: bytes) -> bytes:
    """``raw.replace(b"\\r\\n", b"\\n")``, about twice as fast on messages made mostly of
    short lines (base64 attachments)."""
    if b"\r" not in raw:
        return raw
    return b"\n".join(raw.split(b"\r\n"))


def _payload(part: EmailMessage) -> bytes | None:
    fast = _base64_payload(part)
    if fast is not None:
        return fast
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return None
    return payload if isinstance(payload, bytes) else None


def _base64_payload(part: EmailMessage) -> bytes | None:
    """What ``part.get_payload(decode=True)`` returns for a well-formed base64 body (ASCII,
    padded, only base64 characters between the line breaks), without its copies and line
    list; None for anything else, which takes the email package's way (and its defects)."""
    payload = getattr(part, "_payload", None)  # get_payload() decodes 8-bit text
    if not isinstance(payload, str) or not payload.isascii():
        return None
    if header_str(part.get("content-transfer-encoding", "")).lower() != "base64":
        return None
    data = payload.encode("ascii").translate(None, b"\r\n")  # = b"".join(splitlines())
    if len(data) % 4:
        return None
    try:
        return binascii.a2b_base64(data, strict_mode=True)  # = b64decode(validate=True)
    except binascii.Error:
        return None


def _declared_size(part: EmailMessage) -> int | None:
    try:
        value = part.get_param("size", header="content-disposition")
    except Exception:
        return None
    if isinstance(value, tuple):
        value = value[2]
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def _estimate_size(part: EmailMessage) -> int:
    """The decoded size of a part, from its encoded text, without decoding it."""
    try:
        raw = part.get_payload()
    except Exception:  # 8-bit text in a charset Python cannot decode
        return len(_payload(part) or b"")
    if not isinstance(raw, str | bytes):
        return 0
    encoding = header_str(part.get("Content-Transfer-Encoding")).strip().lower()
    if encoding != "base64":
        return len(raw)
    text = raw if isinstance(raw, str) else raw.decode("latin-1")
    chars = len(text) - sum(text.count(ch) for ch in " \t\r\n" if ch in text)
    return max(0, chars * 3 // 4 - min(2, len(text.rstrip()) - len(text.rstrip().rstrip("="))))


def _short(name: str, limit: int = 80) -> str:
    shown = repr(name[:limit])
    return shown + ("..." if len(name) > limit else "")


def _attachment(part: EmailMessage, index: int, wants: bool, context: SourceContext,
                where: str, filename: str = "", content_type: str = "") -> Attachment:
    filename = filename or part_filename(part) or f"part-{index}"
    safe = sanitize_filename(filename)
    if _raw_name_has_nul(part):
        log.warning("%s: attachment name %s held NUL bytes; they were removed",
                    where, _short(filename))
    if safe != filename:
        log.warning("%s: attachment name %s is unsafe; it will be stored as %s",
                    where, _short(filename), _short(safe))
    content_type = scrub(content_type or part.get_content_type())
    estimate = _estimate_size(part)
    inline = is_inline_image(part, estimate)
    declared = _declared_size(part)
    if declared is not None and declared > max(estimate * 2, 1024 * 1024):
        log.warning("%s: attachment %s declares %d bytes but holds about %d; "
                    "the declared size is ignored", where, _short(safe), declared, estimate)
    remote_id = f"part-{index}"
    if inline or not wants:
        return Attachment(filename, content_type, size=estimate, remote_id=remote_id,
                          status="not_downloaded", inline=inline)
    if estimate > context.max_attachment_bytes:
        log.warning("%s: attachment %s (about %d bytes) is over the %d byte cap; "
                    "recorded, not downloaded (raise agent.max_attachment_mb to keep it)",
                    where, _short(safe), estimate, context.max_attachment_bytes)
        return Attachment(filename, content_type, size=estimate, remote_id=remote_id,
                          status="too_large",
                          note=f"over the {context.max_attachment_bytes} byte cap")
    data = _payload(part) or b""
    return Attachment(filename, content_type, size=len(data), data=data, remote_id=remote_id)


#: Fewer messages than this are read in this process: starting the workers and handing
#: them the messages costs more than reading a small incremental batch here.
POOL_MIN_BATCH = 150

#: Seconds a batch may take in the workers (plus per message) before they are stopped
#: and the batch is read here: a worker forked while another thread held a lock it needs
#: would wait for ever.
POOL_TIMEOUT = 120.0
POOL_TIMEOUT_EACH = 0.2

_worker_context: SourceContext | None = None  # set in each forked reader process


def _start_reader(context: SourceContext) -> None:
    global _worker_context
    _worker_context = context


def _read_in_worker(item: tuple[bytes, datetime | None, dict[str, Any], bool]) -> Message:
    raw, fallback_date, extra, backfill = item
    assert _worker_context is not None
    context = backfill_context(_worker_context) if backfill else _worker_context
    message = message_from_bytes(raw, context, fallback_date=fallback_date, extra=extra)
    if not any(a.data is not None and len(a.data) >= HANDOVER_MIN for a in message.attachments):
        return message
    return dataclasses.replace(message, attachments=tuple(
        hand_over(a, context.scratch_dir) for a in message.attachments))


#: Attachments this large are handed from a reader process to the store as a file in
#: the scratch folder (written and hashed there) instead of as bytes through the pipe.
HANDOVER_MIN = 16 * 1024
_handed_over = itertools.count()


def hand_over(att: Attachment, folder: Path) -> Attachment:
    """``att`` with its bytes written to a new 0600 file in ``folder`` and their sha256,
    for the store to take over (``Attachment.handover_sha256``); ``att`` unchanged when
    it has no bytes, is small, or the file cannot be written (the store then writes the
    bytes itself, and reports a full disk in its own words)."""
    data = att.data
    if data is None or len(data) < HANDOVER_MIN:
        return att
    path = folder / f"read-{os.getpid()}-{next(_handed_over)}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError:
        path.unlink(missing_ok=True)
        return att
    return dataclasses.replace(att, data=None, path=path, size=len(data),
                               handover_sha256=hashlib.sha256(data).hexdigest())


class ReaderPool:
    """:func:`message_from_bytes` over many messages, in ``processes`` forked worker
    processes while this one fetches and stores (the reader is most of a big sync's
    CPU), results in order. Workers are forked when the first big batch comes, so they
    hold ``context`` as it is then; with ``processes=0``, few messages, or no ``fork``
    on this system, messages are read here. Close it when done."""

    def __init__(self, context: SourceContext, processes: int) -> None:
        self.context = context
        self.processes = processes
        self._pool: Any = None
        self._broken = False

    def read(self, items: list[tuple[bytes, datetime | None, dict[str, Any], bool]]
             ) -> list[Message]:
        """``(raw, fallback_date, extra, backfill)`` per message -> its record."""
        if self.processes > 0 and not self._broken and len(items) >= POOL_MIN_BATCH:
            pool = self._start()
            if pool is not None:
                from concurrent.futures.process import BrokenProcessPool

                size = max(1, min(16, len(items) // (self.processes * 4)))
                try:
                    return list(pool.map(_read_in_worker, items, chunksize=size,
                                         timeout=POOL_TIMEOUT + POOL_TIMEOUT_EACH * len(items)))
                except BrokenProcessPool:  # a worker died (killed, out of memory)
                    log.warning("%s: a mail reader process died; reading in this process "
                                "for the rest of the sync", self.context.source)
                    self._abandon()
                except TimeoutError:  # a worker hangs (a lock held at the fork)
                    log.warning("%s: the mail reader processes did not answer in time; "
                                "reading in this process for the rest of the sync",
                                self.context.source)
                    self._abandon()
        return [message_from_bytes(raw, backfill_context(self.context) if backfill
                                   else self.context, fallback_date=date, extra=extra)
                for raw, date, extra, backfill in items]

    def _start(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            try:
                fork = multiprocessing.get_context("fork")
            except ValueError:  # no fork (Windows): read here
                self._broken = True
                return None
            self._pool = ProcessPoolExecutor(self.processes, mp_context=fork,
                                             initializer=_start_reader,
                                             initargs=(self.context,))
        return self._pool

    def _abandon(self) -> None:
        """Stop the workers whatever they are doing; read here from now on."""
        self._broken = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
