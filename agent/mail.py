"""Turning internet mail into :class:`~agent.models.Message` records.

Shared by every mail-based platform (IMAP, Maildir, and plugins that read
notification emails). Parsing never raises on bad input: malformed MIME, unknown
charsets, non-UTF-8 headers and hostile HTML are decoded as well as they can be, and
what was wrong is kept in ``extra["defects"]``.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from typing import Any

from agent.connector import SourceContext
from agent.models import Attachment, Identity, Message

log = logging.getLogger("retainer.mail")

_MSGID = re.compile(r"<([^<>\s]+)>")
_WS = re.compile(r"[ \t\r\f\v]+")
_BLANKS = re.compile(r"\n\s*\n\s*\n+")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def decode_text(raw: bytes, charset: str | None) -> str:
    """Decode body bytes with the declared charset, falling back without raising."""
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return raw.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return raw.decode("latin-1")


def decode_header_value(value: Any) -> str:
    """Decode an RFC 2047 header (``=?utf-8?q?...?=``) to text; never raises."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    try:
        text = str(make_header(decode_header(value)))
    except Exception:
        text = value
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _WS.sub(" ", text.replace("\x00", "").replace("\r", "").replace("\n", " ")).strip()


def parse_addresses(values: Iterable[Any]) -> tuple[Identity, ...]:
    """Parse ``From``/``To``/``Cc`` header values into email identities."""
    found: list[Identity] = []
    raw = [decode_header_value(v) for v in values if v]
    for name, addr in email.utils.getaddresses(raw):
        addr = addr.strip().strip("<>").lower()
        if "@" not in addr:
            continue
        found.append(Identity("email", addr, name=name.strip().strip('"')))
    return tuple(found)


def parse_date(value: Any, fallback: datetime | None = None) -> datetime:
    """Parse a ``Date`` header into an aware datetime (UTC when no zone is given)."""
    if value:
        try:
            parsed = email.utils.parsedate_to_datetime(decode_header_value(value))
        except (TypeError, ValueError, IndexError, OverflowError):
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return fallback or EPOCH


def message_ids(value: Any) -> list[str]:
    """All ``<id@host>`` values in a Message-ID / In-Reply-To / References header."""
    if not value:
        return []
    return _MSGID.findall(decode_header_value(value))


def html_to_text(html: str) -> str:
    """Readable text from HTML. Scripts, styles and comments are dropped, never run."""
    from bs4 import BeautifulSoup, Comment

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "head", "noscript", "template", "iframe", "object"]):
        tag.decompose()
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    for br in soup.find_all("br"):
        br.replace_with("\n")
    text = soup.get_text("\n")
    lines = [_WS.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return text.strip()


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


def header_info(headers: EmailMessage, raw_header: bytes, fallback_date: datetime | None = None
                ) -> HeaderInfo:
    """Extract identity, threading and date from a parsed header block.

    The remote id is the Message-ID (so the same mail seen twice, or under new IMAP
    UIDs after a UIDVALIDITY change, is stored once) or, lacking one, a hash of the
    raw header bytes.
    """
    ids = message_ids(headers.get("Message-ID"))
    message_id = ids[0] if ids else ""
    remote_id = (
        f"<{message_id}>" if message_id else "sha256:" + hashlib.sha256(raw_header).hexdigest()
    )
    senders = parse_addresses([headers.get("From"), headers.get("Sender")])
    sender = senders[0] if senders else Identity("email", "unknown@invalid", name="(no sender)")
    recipients = parse_addresses(
        [*headers.get_all("To", []), *headers.get_all("Cc", [])]
    )
    references = tuple(message_ids(headers.get("References")))
    in_reply = message_ids(headers.get("In-Reply-To"))
    root = references[0] if references else (in_reply[0] if in_reply else message_id)
    thread = f"<{root}>" if root else remote_id
    return HeaderInfo(
        remote_id=remote_id,
        message_id=message_id,
        sender=sender,
        recipients=recipients,
        sent_at=parse_date(headers.get("Date"), fallback_date),
        subject=decode_header_value(headers.get("Subject")),
        in_reply_to=in_reply[0] if in_reply else "",
        references=references,
        thread_remote_id=thread,
    )


def parse_header_bytes(raw_header: bytes, fallback_date: datetime | None = None) -> HeaderInfo:
    """Parse only a header block (as IMAP ``BODY[HEADER]`` returns it)."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw_header)
    return header_info(headers, raw_header, fallback_date)


def part_filename(part: EmailMessage) -> str:
    """The attachment's name from Content-Disposition or Content-Type, decoded."""
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name is None:
        name = part.get_param("name", header="content-type")
        if isinstance(name, tuple):
            name = email.utils.collapse_rfc2231_value(name)
    return decode_header_value(name) if name else ""


def is_attachment(part: EmailMessage) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    if disposition == "attachment":
        return True
    if part.get_content_maintype() in {"text", "multipart", "message"} and not part_filename(part):
        return False
    return bool(part_filename(part)) or part.get_content_maintype() not in {"text", "multipart"}


def is_inline_image(part: EmailMessage) -> bool:
    """Signature logos and other images shown inside the message body."""
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return (
        part.get_content_maintype() == "image"
        and disposition != "attachment"
        and (disposition == "inline" or bool(part.get("Content-ID")))
    )


def message_from_bytes(
    raw: bytes,
    context: SourceContext,
    *,
    fallback_date: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> Message:
    """Parse one whole RFC 822 message into a :class:`Message` with its attachments.

    Attachments are downloaded (kept in memory) only when ``context.wants_attachments``
    says the sender is a contractor and the part is under ``max_attachment_bytes``;
    otherwise they are recorded with a status that says why.
    """
    header_end = raw.find(b"\r\n\r\n")
    if header_end < 0:
        header_end = raw.find(b"\n\n")
    raw_header = raw[: header_end if header_end >= 0 else len(raw)]
    try:
        parsed = BytesParser(policy=compat32).parsebytes(raw)
    except Exception as exc:  # pragma: no cover - the compat32 parser is lenient
        log.warning("%s: unparseable message kept as text: %s", context.source, exc)
        parsed = BytesParser(policy=compat32).parsebytes(raw_header + b"\n\n")
    info = header_info(parsed, raw_header, fallback_date)
    defects = [type(d).__name__ for d in parsed.defects]
    wants = context.wants_attachments(info.sender) and not context.is_owner(info.sender)
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    for index, part in enumerate(parsed.walk()):
        defects.extend(type(d).__name__ for d in part.defects)
        if part.is_multipart():
            continue
        if is_attachment(part):
            attachments.append(_attachment(part, index, wants, context))
            continue
        payload = _payload(part)
        if payload is None:
            continue
        text = decode_text(payload, part.get_content_charset())
        (html if part.get_content_subtype() == "html" else plain).append(text)
    text = clean_text("\n\n".join(plain)) if plain else html_to_text("\n".join(html))
    merged_extra = _extra(info, defects)
    merged_extra.update(extra or {})
    if defects:
        log.info("%s: message %s has MIME defects: %s", context.source, info.remote_id,
                 ", ".join(sorted(set(defects))))
    return build_message(info, text, attachments, merged_extra)


def build_message(info: HeaderInfo, text: str, attachments: Iterable[Attachment],
                  extra: dict[str, Any]) -> Message:
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
    )


def _extra(info: HeaderInfo, defects: list[str]) -> dict[str, Any]:
    extra: dict[str, Any] = {"message_id": info.message_id}
    if info.in_reply_to:
        extra["in_reply_to"] = info.in_reply_to
    if info.references:
        extra["references"] = list(info.references)
    if defects:
        extra["defects"] = sorted(set(defects))
    return extra


def _payload(part: EmailMessage) -> bytes | None:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return None
    return payload if isinstance(payload, bytes) else None


def _attachment(part: EmailMessage, index: int, wants: bool, context: SourceContext
                ) -> Attachment:
    filename = part_filename(part) or f"part-{index}"
    content_type = part.get_content_type()
    inline = is_inline_image(part)
    raw = part.get_payload()
    encoded_size = len(raw) if isinstance(raw, str | bytes) else 0
    encoding = (part.get("Content-Transfer-Encoding") or "").strip().lower()
    estimate = encoded_size * 3 // 4 if encoding == "base64" else encoded_size
    remote_id = f"part-{index}"
    if inline or not wants:
        return Attachment(filename, content_type, size=estimate, remote_id=remote_id,
                          status="not_downloaded", inline=inline)
    if estimate > context.max_attachment_bytes:
        return Attachment(filename, content_type, size=estimate, remote_id=remote_id,
                          status="too_large",
                          note=f"over the {context.max_attachment_bytes} byte cap")
    data = _payload(part) or b""
    return Attachment(filename, content_type, size=len(data), data=data, remote_id=remote_id)
