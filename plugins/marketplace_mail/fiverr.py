"""Fiverr notification emails (Fiverr has no buyer API; its emails are the only feed).

Senders: ``noreply@e.fiverr.com`` and ``noreply@fiverr.com`` (transactional);
``announce.fiverr.com`` is marketing. What each email becomes:

=====================  ===========================================================
kind                   records
=====================  ===========================================================
``message``            a message from the seller (``You've received messages from X``)
``delivery``           a ``delivery_waiting`` submission, then the seller's message
``revision``           a message in the order's thread (the owner asked for changes)
``completed``          a message in the order's thread (the order is complete)
``started``            a message in the order's thread (the seller started work)
marketing, receipts,   dropped: they stay in the mailbox but are not conversations
account notices
anything else          kept from the Fiverr address, marked ``extra["system"]``, logged
=====================  ===========================================================

The seller is ``Identity("fiverr", <username>, name, "https://www.fiverr.com/<username>")``.
The username comes from the ``Name (@username)`` line, the ``fiverr.com/inbox/<username>``
reply link, or the subject, in that order. The thread is ``fiverr:order:<FO…>`` when the
email names an order (in its links or text), otherwise ``fiverr:inbox:<username>``.
A delivery's review deadline is three days after delivery, when Fiverr completes the
order by itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from agent.mailformats import MailFormat, domain_matches, sender_domain
from agent.models import Identity, Message, Record
from plugins.marketplace_mail.common import (
    Mail,
    classify,
    delivery,
    element_text,
    log,
    person_message,
    summary,
    system_message,
    text_between,
    unquote_message,
    username_from_subject,
    username_ok,
)

PLATFORM = "fiverr"
DOMAINS = ("fiverr.com",)
MARKETING_DOMAINS = ("announce.fiverr.com",)
AUTO_COMPLETE = timedelta(days=3)

_DROP = re.compile(
    r"(?i)receipt|invoice|\bw-?9\b|\btax\b|phone number|password|verif(?:y|ication)|"
    r"welcome to fiverr|security|sign(?:ed)?[- ]in|\d+ ?% off|discount|coupon|newsletter|"
    r"recommend|inspir|trending|ideas for|\btips\b|survey|rate your experience|"
    r"fiverr pro\b|fiverr business|gift card|promo|"
    r"received an order|new order\b"  # seller-side mail: the owner's own buyers
)
_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("delivery", re.compile(r"(?i)\bdelivered\b")),
    ("completed", re.compile(r"(?i)\b(?:is|was|has been|now|marked as) complete\b|"
                             r"\border complete\b|\bcompleted\b")),
    ("revision", re.compile(r"(?i)\brevision\b|\bmodification\b")),
    ("message", re.compile(r"(?i)\bmessages? from\b|\bsent you (?:a |new )?messages?\b|"
                           r"\bnew messages?\b")),
    ("started", re.compile(r"(?i)\border (?:has )?started\b|\bstarted working\b|"
                           r"\brequirements\b")),
)
_AT_USER = re.compile(r"\(@([A-Za-z0-9][A-Za-z0-9_.\-]*)\)")
_INBOX = re.compile(r"^/inbox/([^/?#]+)")
_ORDER_PATH = re.compile(r"^/orders/(FO[A-Z0-9]{6,14})\b")
_ORDER = re.compile(r"\b(FO[A-Z0-9]{6,14})\b")
_SUBJECT_USER = (  # "messages from X" names the display name, not the username: not used
    re.compile(r"^@?([A-Za-z0-9][A-Za-z0-9_.\-]+) (?:has |just )?(?:delivered|sent|completed|"
               r"started|accepted)\b"),
    re.compile(r"(?i)\bwith @?([A-Za-z0-9][A-Za-z0-9_.\-]+) (?:is|has|was)\b"),
    re.compile(r"(?i)(?<!messages )(?<!message )\b(?:from|by|to) @?([A-Za-z0-9][A-Za-z0-9_.\-]+)"
               r"[!.,]?\s*$"),
)
_LEAD_IN = re.compile(r"(?i)(?:messages? from|message from|from|by|with)\s+(.+)$")
_BUTTON = re.compile(r"(?i)^(?:view|reply|respond|go to|open|see|check|review|accept|"
                     r"request a revision)\b|unsubscribe|\u00a9|^need help|"
                     r"this (?:e-?mail|message) was sent")
_GIG = re.compile(r"^I will .{5,200}$")


def matches(message: Message) -> bool:
    return domain_matches(sender_domain(message), *DOMAINS)


def conversation_link(mail: Mail, order: str) -> bool:
    """The email names an order, or its button is a message notification's reply link."""
    return bool(order) or any("message" in link.param("email_name")
                              for link in mail.links_on(*DOMAINS))


def order_id(mail: Mail) -> str:
    found = mail.find_link(_ORDER_PATH, *DOMAINS)
    if found:
        return found[1].group(1)
    for link in mail.links_on(*DOMAINS):
        value = link.param("order_id")
        if _ORDER.fullmatch(value):
            return value
    match = _ORDER.search(mail.subject + "\n" + mail.text)
    return match.group(1) if match else ""


def display_name(before: str) -> str:
    """``Pixel Craft`` out of ``You've received messages from Pixel Craft`` (the text
    before ``(@username)``): after a lead-in word, else the trailing capitalised words."""
    before = before.strip().rstrip(":-").strip()
    lead = _LEAD_IN.search(before)
    if lead:
        return lead.group(1).strip()
    words = before.split()
    tail: list[str] = []
    for word in reversed(words):
        if not word[:1].isupper() and not word[:1].isdigit():
            break
        tail.insert(0, word)
    return " ".join(tail)


def seller(mail: Mail) -> Identity | None:
    """The Fiverr user the notification is about, or None."""
    username, name = "", ""
    for line in mail.lines:
        match = _AT_USER.search(line)
        if match and username_ok(match.group(1)):
            username = match.group(1)
            name = display_name(line[: match.start()])
            break
    if not username:
        found = mail.find_link(_INBOX, *DOMAINS)
        if found and username_ok(found[1].group(1)):
            username = found[1].group(1)
    if not username:
        username = username_from_subject(mail.subject, _SUBJECT_USER)
    if not username:
        return None
    if not name or len(name) > 60 or name.lower() == username.lower():
        subject_name = re.search(r"(?i)messages? from (.+?)\s*$", mail.subject)
        name = subject_name.group(1).strip() if subject_name else username
    return Identity(PLATFORM, username, name=name,
                    profile_url=f"https://www.fiverr.com/{username}")




def body(mail: Mail, who: Identity) -> str:
    """The message (or delivery note) the seller wrote, as far as the email shows it."""
    found = mail.select_text(".responsive-table .content table", ".message-text",
                             ".delivery-message")
    if not found and mail.soup is not None:
        rows = mail.soup.select(".content-section > table > tbody > tr > td > table > tbody > tr")
        if len(rows) >= 3:
            found = [element_text(rows[-3])]
    if found:
        return unquote_message("\n\n".join(found))
    start = re.compile(r"(?i)\(@" + re.escape(who.address) + r"\)|delivered|messages? from|"
                       r"sent you")
    lines = [line for line in text_between(mail.lines, start, _BUTTON).splitlines()
             if not _GIG.match(line)]
    return unquote_message("\n".join(lines)) if lines else summary(mail, _BUTTON)


def gig_title(mail: Mail) -> str:
    return next((line for line in mail.lines if _GIG.match(line)), "")


def interpret(message: Message) -> Sequence[Record]:
    mail = Mail(message)
    order = order_id(mail)
    if domain_matches(sender_domain(message), *MARKETING_DOMAINS):
        kind = "drop"
    else:
        kind = classify(mail, _KINDS, _DROP, conversation_link=conversation_link(mail, order))
    if kind == "drop":
        log.debug("%s: Fiverr mail %r is not a conversation; dropped", message.remote_id,
                  message.subject[:80])
        return []
    who = seller(mail)
    if not kind:
        if order or mail.find_link(_INBOX, *DOMAINS):
            return [system_message(message, platform=PLATFORM, kind="unknown",
                                   reason="no known notification kind", order_id=order)]
        log.debug("%s: Fiverr mail %r names no order or conversation; dropped",
                  message.remote_id, message.subject[:80])
        return []
    if who is None:
        return [system_message(message, platform=PLATFORM, kind=kind,
                               reason="no seller username found", order_id=order)]
    thread = f"fiverr:order:{order}" if order else f"fiverr:inbox:{who.address.lower()}"
    order_url = f"https://www.fiverr.com/orders/{order}" if order else ""
    inbox_url = f"https://www.fiverr.com/inbox/{who.address}"
    text = body(mail, who) if kind in ("message", "delivery") else summary(mail, _BUTTON)
    records: list[Record] = []
    if kind == "delivery":
        found = mail.find_link(_ORDER_PATH, *DOMAINS)
        url = found[0].url if found else order_url
        if not url:
            return [system_message(message, platform=PLATFORM, kind=kind,
                                   reason="a delivery without an order number or link")]
        title = gig_title(mail) or message.subject
        label = f"order {order}" if order else "order"
        records.append(delivery(
            message, platform=PLATFORM, contractor=who, url=url, title=title, thread=thread,
            contract=order,
            filename=f"Fiverr delivery of {label} by {who.address}",
            note="delivered on Fiverr: download it there, then accept it or ask for a revision "
                 "(Fiverr completes the order by itself 3 days after delivery)",
            review_deadline=message.sent_at + AUTO_COMPLETE))
    note = person_message(message, platform=PLATFORM, sender=who, kind=kind, text=text,
                          thread=thread, url=order_url or inbox_url, order_id=order)
    if kind == "revision":  # the owner asked for it: the owner's message to the seller
        note = replace(note, direction="out", recipients=(who,))
    records.append(note)
    return records


FORMAT = MailFormat(name="fiverr", platform=PLATFORM, matches=matches, interpret=interpret)
