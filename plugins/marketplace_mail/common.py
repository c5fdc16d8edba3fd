"""Shared parsing for marketplace notification emails.

:class:`Mail` parses one notification once: the HTML (scripts, styles and comments
dropped, never run), the readable text, and every link, with click-tracking wrappers
unwrapped. Links are only trusted on the marketplace's own domains and over http(s),
so a forged "View delivery" button cannot put a stranger's URL into the review queue.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from agent.mail import ACTIVE_TAGS, html_to_text
from agent.mailformats import NOTIFICATION, domain_matches
from agent.models import Attachment, Identity, Message, Submission

log = logging.getLogger("retainer.plugins.marketplace_mail")

#: Query parameters that tracking links use to carry the real destination.
REDIRECT_PARAMS = ("redirect_url", "redirect", "url", "u", "target", "destination", "dest",
                   "r", "link", "goto", "next")
#: Longest message text kept from one notification.
MAX_TEXT = 20_000
#: HTML parsed per notification; real templates are well under 150 kB, and the rest of
#: a bigger one is skipped so one crafted email cannot stall a sync.
MAX_HTML = 256 * 1024
#: Words that are never a marketplace user's name (they show up in paths and subjects).
NOT_USERS = frozenset({
    "fiverr", "upwork", "freelancer", "noreply", "no-reply", "donotreply", "support", "team",
    "inbox", "orders", "order", "messages", "message", "you", "your", "me", "admin", "help",
    "linker", "www", "settings", "account", "notifications", "users", "u", "seller", "buyer",
})
_WS = re.compile(r"[ \t\r\f\v\u00a0]+")
_ANY_WS = re.compile(r"\s+")
_BLANKS = re.compile(r"\n\s*\n\s*\n+")


@dataclass(frozen=True)
class Link:
    """One ``<a href>`` (or bare URL in the text), unwrapped from click tracking."""

    text: str
    url: str
    host: str
    path: str
    query: dict[str, str]
    #: query parameters of the tracking wrappers around it (``order_id``, ``email_name``)
    outer_query: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str:
        return self.query.get(name) or self.outer_query.get(name) or ""


def split_url(url: str) -> tuple[str, str, dict[str, str]] | None:
    """``(host, path, query)`` of an http(s) URL, or None for anything else."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    query = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=False)}
    return parts.hostname.lower(), unquote(parts.path), query


def make_link(text: str, url: str) -> Link | None:
    """Parse ``url``, following up to three redirect wrappers (``?redirect_url=https...``)."""
    outer: dict[str, str] = {}
    for _ in range(4):
        split = split_url(url)
        if split is None:
            return None
        host, path, query = split
        inner = next((query[p] for p in REDIRECT_PARAMS
                      if query.get(p, "").lower().startswith(("http://", "https://"))), "")
        if not inner:
            return Link(text=text, url=url.strip(), host=host, path=path, query=query,
                        outer_query=outer)
        outer = {**query, **outer}
        url = inner
    return None


_BARE_URL = re.compile(r"https?://[^\s<>\"')\]]+")


class Mail:
    """One notification email, parsed once."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.subject = message.subject.strip()
        self.soup: Any = None
        self.links: list[Link] = []
        html = (message.html or "")[:MAX_HTML]
        if html.strip():
            self.soup = _soup(html)
        if self.soup is not None:
            for anchor in self.soup.find_all("a", href=True):
                link = make_link(_clean(anchor.get_text(" ")), str(anchor["href"]))
                if link is not None:
                    self.links.append(link)
        #: the plain text part (or, without one, the HTML as text)
        self.text = message.text.strip() or (html_to_text(html) if html else "")
        #: the HTML's text laid out as a browser would, else the plain text
        self.layout = element_text(self.soup) if self.soup is not None else self.text
        for match in _BARE_URL.finditer(self.text):
            link = make_link("", match.group(0).rstrip(".,;:"))
            if link is not None:
                self.links.append(link)
        self.lines = [line for line in (_clean(x) for x in self.layout.splitlines()) if line]

    @property
    def headline(self) -> str:
        """The subject and the first lines of the body: where a notification says what it is."""
        return self.subject + "\n" + "\n".join(self.lines[:6])

    def links_on(self, *domains: str) -> Iterator[Link]:
        """Links whose host is one of ``domains`` or a subdomain of one."""
        for link in self.links:
            if domain_matches(link.host, *domains):
                yield link

    def find_link(self, pattern: re.Pattern[str], *domains: str) -> tuple[Link, re.Match[str]] | None:
        """The first link on ``domains`` whose path matches ``pattern``."""
        for link in self.links_on(*domains):
            match = pattern.search(link.path)
            if match:
                return link, match
        return None

    def select_text(self, *selectors: str) -> list[str]:
        """The text of every element matching the first CSS selector that matches any."""
        if self.soup is None:
            return []
        for selector in selectors:
            try:
                found = self.soup.select(selector)
            except Exception:  # a selector the installed soupsieve does not know
                continue
            texts = [t for t in (element_text(el) for el in found) if t]
            if texts:
                return texts
        return []


def _soup(html: str) -> Any:
    from bs4 import BeautifulSoup, Comment

    try:
        soup = BeautifulSoup(html, "html.parser")
        for tag in soup(list(ACTIVE_TAGS)):
            tag.decompose()
        for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
            comment.extract()
    except RecursionError:
        return None
    return soup


#: How far up from a piece of text to look for the block it belongs to.
_MAX_BLOCK_SEARCH = 64
_BLOCKS = frozenset(("p", "div", "tr", "li", "td", "th", "table", "blockquote", "h1", "h2", "h3", "h4",
           "h5", "h6", "ul", "ol", "pre", "center"))


def element_text(element: Any) -> str:
    """Readable text of one element, laid out as a browser would: source line breaks are
    spaces; paragraphs, cells and ``<br>`` end lines. Linear in the size of the markup."""
    from bs4.element import NavigableString, Tag

    parts: list[str] = []
    last_block: Any = None
    for node in element.descendants:
        if isinstance(node, Tag):
            if node.name == "br":
                parts.append("\n")
            continue
        if type(node) is not NavigableString:  # comments, doctypes, CDATA
            continue
        block = None
        for depth, parent in enumerate(node.parents):
            if depth > _MAX_BLOCK_SEARCH:
                break
            if parent.name in _BLOCKS:
                block = parent
                break
        if block is not last_block:
            parts.append("\n")
            last_block = block
        parts.append(_ANY_WS.sub(" ", str(node)))
    lines = [_clean(line) for line in "".join(parts).splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _clean(text: str) -> str:
    return _WS.sub(" ", text).strip()


def text_between(lines: Sequence[str], start: re.Pattern[str], stop: re.Pattern[str]) -> str:
    """The lines after the first that matches ``start``, up to one that matches ``stop``."""
    out: list[str] = []
    started = False
    for line in lines:
        if not started:
            started = bool(start.search(line))
            continue
        if stop.search(line):
            break
        out.append(line)
    return "\n".join(out).strip()


def unquote_message(text: str) -> str:
    """Strip the quotes notification templates put around a message excerpt."""
    text = text.strip()
    for left, right in (('"', '"'), ("\u201c", "\u201d"), ("'", "'")):
        if len(text) > 1 and text.startswith(left) and text.endswith(right):
            return text[1:-1].strip()
    return text


def classify(mail: Mail, kinds: Sequence[tuple[str, re.Pattern[str]]], drop: re.Pattern[str],
             *, conversation_link: bool) -> str:
    """What a notification is: a kind from ``kinds``, ``"drop"``, or ``""`` (not understood).

    The subject decides first: a kind pattern, else a ``drop`` pattern (newsletters,
    receipts). Only when the subject says nothing are the first lines of the body
    consulted, and only if the email links to a private conversation or order
    (``conversation_link``): marketing quotes "new messages from..." too, but never links
    to the owner's own rooms and orders.
    """
    for kind, pattern in kinds:
        if pattern.search(mail.subject):
            return kind
    if drop.search(mail.subject):
        return "drop"
    if conversation_link:
        for kind, pattern in kinds:
            if pattern.search(mail.headline):
                return kind
    return ""


def username_ok(name: str) -> bool:
    """A plausible marketplace user name, not a path word or the marketplace itself."""
    return (bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{1,49}", name))
            and name.lower() not in NOT_USERS)


_GREETING = re.compile(r"(?i)^(?:hi|hello|hey|dear)\b.{0,40},?$")


def summary(mail: Mail, button: re.Pattern[str]) -> str:
    """The body's first paragraph-worth of lines: no greeting, nothing from the first
    button ("View message", ...) on; the subject when nothing is left."""
    lines = []
    for line in mail.lines:
        if button.search(line):
            break
        if not _GREETING.match(line):
            lines.append(line)
    return "\n".join(lines) or mail.subject


def username_from_subject(subject: str, patterns: Iterable[re.Pattern[str]]) -> str:
    """The first plausible user name one of ``patterns`` finds in a subject, or ``""``."""
    for pattern in patterns:
        match = pattern.search(subject)
        if match and username_ok(match.group(1)):
            return match.group(1)
    return ""


def first(matches: Iterable[str]) -> str:
    return next((m for m in matches if m), "")


def notification_extra(message: Message, platform: str, kind: str, **details: Any
                       ) -> dict[str, Any]:
    """``Message.extra`` for an interpreted notification: the mail's own extra (message id,
    references) plus what it was, where it points, and who sent the email."""
    info = {"platform": platform, "kind": kind, "email_from": message.sender.address}
    info.update({k: v for k, v in details.items() if v not in (None, "")})
    return {**dict(message.extra), NOTIFICATION: info}


def person_message(message: Message, *, platform: str, sender: Identity, kind: str, text: str,
                   thread: str, remote_id: str | None = None, **details: Any) -> Message:
    """The notification as a message from the marketplace user it is about."""
    attachments = tuple(a for a in message.attachments if not a.inline)
    return replace(
        message,
        remote_id=remote_id or message.remote_id,
        sender=sender,
        platform=platform,
        text=text[:MAX_TEXT],
        thread_remote_id=thread or message.thread_remote_id,
        attachments=attachments,
        extra=notification_extra(message, platform, kind, **details),
        html="",
    )


def system_message(message: Message, *, platform: str, kind: str, reason: str,
                   **details: Any) -> Message:
    """A notification kept as it came (from the marketplace's robot address), marked
    ``extra["system"] = True`` so the store can leave it out of the roster.

    Logged as a warning when the kind was recognised but a field was missing (the
    template probably changed), at INFO level for kinds this plugin does not know."""
    level = logging.INFO if kind == "unknown" else logging.WARNING
    log.log(level, "%s: %s notification %r was not understood (%s); kept as it came from %s. "
            "If the marketplace changed its emails, report it with the .eml attached",
            message.remote_id, platform, message.subject[:80], reason, message.sender.address)
    extra = notification_extra(message, platform, kind, reason=reason, **details)
    extra["system"] = True
    return replace(message, platform=platform, extra=extra, html="")


def delivery(message: Message, *, platform: str, contractor: Identity, url: str, filename: str,
             title: str, thread: str, contract: str = "", note: str = "",
             review_deadline: datetime | None = None) -> Submission:
    """A "delivery waiting" submission: work delivered on the marketplace, to fetch there."""
    extra: dict[str, Any] = {"platform": platform, "notification": message.remote_id}
    if review_deadline is not None:
        extra["review_deadline"] = review_deadline.isoformat()
    return Submission(
        remote_id=f"{message.remote_id}#delivery",
        submitted_at=message.sent_at,
        contractor=contractor,
        attachment=Attachment(filename=filename, content_type="text/uri-list", url=url,
                              remote_id=f"{platform}-delivery", status="delivery_waiting",
                              note=note),
        title=title,
        thread_remote_id=thread,
        contract_remote_id=contract,
        extra=extra,
        platform=platform,
        message_remote_id=message.remote_id,
        under_contract=True,  # work is delivered on a marketplace only under an order/contract
    )


def numbered(message: Message, count: int) -> list[str]:
    """Remote ids for ``count`` messages read out of one email: the first keeps the
    email's own id (so it replaces the raw mail if that was stored before), the others
    get ``#2``, ``#3``..."""
    return [message.remote_id if i == 0 else f"{message.remote_id}#{i + 1}" for i in range(count)]

