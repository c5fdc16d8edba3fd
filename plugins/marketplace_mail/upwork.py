"""Upwork notification emails.

Upwork has an API (``plugins/upwork``); these emails matter for owners who have not set
it up, and they arrive faster. Senders are at ``upwork.com``: a person's messages come
as ``"<Name> via Upwork" <donotreply@upwork.com>``, everything else from ``Upwork``.

==================  ==============================================================
kind                records
==================  ==============================================================
``message``         one message per message card (``table.card-box``), from the
                    person in the ``via Upwork`` display name
``submission``      a ``delivery_waiting`` submission (work submitted on a
                    milestone), then a message from the freelancer saying so
``offer_accepted``  a message from the freelancer in the contract's thread
``contract_ended``  a message from the freelancer in the contract's thread
job alerts, tips,   dropped
receipts, account
anything else       kept from the Upwork address, marked ``extra["system"]``
==================  ==============================================================

The freelancer is ``Identity("upwork", <name as Upwork shows it>, name,
profile_url)``: the emails carry the display name ("Jane D."), and a profile link
(``upwork.com/freelancers/~01…``) only sometimes, so the name is the one key that the
message and the submission emails share. The profile link, when present, lets the
roster join this identity to the one the Upwork API reports. The thread is
``upwork:room:<room id>`` from the ``/messages/rooms/`` link, or
``upwork:contract:<id>`` from a contract/workroom link.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta

from agent.mailformats import MailFormat, domain_matches, sender_domain
from agent.models import Identity, Message, Record
from plugins.marketplace_mail.common import (
    Link,
    Mail,
    classify,
    delivery,
    element_text,
    first,
    log,
    make_link,
    numbered,
    person_message,
    summary,
    system_message,
    text_between,
    unquote_message,
)

PLATFORM = "upwork"
DOMAINS = ("upwork.com",)
AUTO_APPROVE = timedelta(days=14)

_VIA = re.compile(r"(?i)^\s*\"?(.+?)\"?\s+via\s+upwork\s*$")
_DROP = re.compile(
    r"(?i)job alert|new jobs?\b|jobs? (?:you might|for you)|newsletter|\btips\b|webinar|"
    r"invitation to interview|receipt|invoice|billing|statement|payment method|security|"
    r"password|verif(?:y|ication)|sign(?:ed)?[- ]in|membership|connects|digest|survey|"
    r"welcome to upwork|talent (?:you might|for you)|recommended|top talent|"
    r"complete your profile"
)
_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("submission", re.compile(r"(?i)submitted (?:work|a milestone)|work (?:was |has been )?"
                              r"submitted|submitted .{0,80}for (?:your )?review|"
                              r"requested (?:a )?(?:payment|approval)|ready for (?:your )?review")),
    ("message", re.compile(r"(?i)unread messages?|new messages?|sent you a message|"
                           r"direct message|messaged you")),
    ("offer_accepted", re.compile(r"(?i)accepted your offer|offer (?:was |has been )?accepted")),
    ("contract_ended", re.compile(r"(?i)ended (?:the|your) contract|contract (?:has )?ended")),
)
_ROOM = re.compile(r"/messages/rooms/([A-Za-z0-9_\-]+)")
_CONTRACT = re.compile(r"/(?:contracts|workroom)/(\d{5,})")
_PROFILE = re.compile(r"^/(?:freelancers|fl)/(~[0-9A-Za-z]{6,})")
_TIME = re.compile(r"(?i)^\d{1,2}:\d{2}(?:\s?[AP]M)?$")
_JOB = re.compile(r"(?i)about the job (.+?)\s*$")
_WHO_DID = re.compile(r"^(.{2,60}?) (?:has |just )?(?:submitted|requested|accepted|ended|sent)\b")
_MILESTONE = re.compile(r"(?i)milestone[:\s]+[\"\u201c]?(.+?)[\"\u201d]?(?:\s+(?:of|on|for)\s|[.,]|$)")
_BUTTON = re.compile(r"(?i)^(?:view|reply|respond|go to|open|see|review|approve|request changes)"
                     r"\b|unsubscribe|\u00a9|^need help|this (?:e-?mail|message) was sent")
_NOT_NAMES = re.compile(r"(?i)\bupwork\b|^you\b|^your\b|^we\b|^the\b")


def matches(message: Message) -> bool:
    return domain_matches(sender_domain(message), *DOMAINS)


def person_name(mail: Mail) -> str:
    """The freelancer's name: the ``via Upwork`` display name, else the body's first
    "<Name> submitted/accepted/ended…" sentence."""
    via = _VIA.match(mail.message.sender.name or "")
    if via and not _NOT_NAMES.search(via.group(1)):
        return via.group(1).strip()
    for text in (mail.subject, *mail.lines[:12]):
        match = _WHO_DID.match(text)
        if match and not _NOT_NAMES.search(match.group(1)):
            return match.group(1).strip()
    return ""


def identity(mail: Mail, name: str) -> Identity:
    found = mail.find_link(_PROFILE, *DOMAINS)
    profile = f"https://www.upwork.com/freelancers/{found[1].group(1)}" if found else ""
    return Identity(PLATFORM, name, name=name, profile_url=profile)


def thread_of(mail: Mail, links: Sequence[Link] = ()) -> tuple[str, str, str]:
    """``(thread remote id, room id, contract id)`` from the given links, else all links."""
    candidates = list(links) or list(mail.links_on(*DOMAINS))
    room = first(m.group(1) for m in (_ROOM.search(x.path) for x in candidates
                                      if domain_matches(x.host, *DOMAINS)) if m)
    contract = first(m.group(1) for m in (_CONTRACT.search(x.path) for x in candidates
                                          if domain_matches(x.host, *DOMAINS)) if m)
    if room:
        return f"upwork:room:{room}", room, contract
    if contract:
        return f"upwork:contract:{contract}", room, contract
    return "", room, contract


def cards(mail: Mail) -> list[tuple[str, str]]:
    """``(text, link)`` for each message card: ``table.card-box`` holding the message in
    ``div.p-xl-left-md.m-0-top-md`` and its button in ``.button-holder a``."""
    if mail.soup is None:
        return []
    out = []
    for card in mail.soup.select("table[class*=card-box]"):
        texts = [element_text(div) for div in card.select("div.p-xl-left-md.m-0-top-md")]
        text = "\n\n".join(t for t in texts if t)
        button = card.select_one("[class*=button-holder] a[href]")
        if text:
            out.append((unquote_message(text), str(button["href"]) if button else ""))
    return out




def interpret(message: Message) -> Sequence[Record]:
    mail = Mail(message)
    thread, room, contract = thread_of(mail)
    kind = classify(mail, _KINDS, _DROP, conversation_link=bool(room or contract))
    if kind == "drop":
        log.debug("%s: Upwork mail %r is not a conversation; dropped", message.remote_id,
                  message.subject[:80])
        return []
    if not kind:
        if room or contract:
            return [system_message(message, platform=PLATFORM, kind="unknown",
                                   reason="no known notification kind", room_id=room,
                                   contract_id=contract)]
        log.debug("%s: Upwork mail %r names no room or contract; dropped", message.remote_id,
                  message.subject[:80])
        return []
    name = person_name(mail)
    if not name:
        return [system_message(message, platform=PLATFORM, kind=kind,
                               reason="no freelancer name found", room_id=room,
                               contract_id=contract)]
    who = identity(mail, name)
    job = _JOB.search(mail.subject)
    details = {"job": job.group(1) if job else "", "room_id": room, "contract_id": contract}
    if kind == "message":
        found = cards(mail)
        if not found:
            start = re.compile(r"(?i)unread messages?|sent you a message|direct message|"
                               r"about the job|^" + re.escape(name) + r"$")
            lines = [line for line in text_between(mail.lines, start, _BUTTON).splitlines()
                     if line != name and not _TIME.match(line)]
            found = [(unquote_message("\n".join(lines)) or summary(mail, _BUTTON), "")]
        ids = numbered(message, len(found))
        records: list[Record] = []
        for remote_id, (text, href) in zip(ids, found, strict=True):
            card_link = make_link("", href) if href else None
            card_thread = thread_of(mail, [card_link])[0] if card_link else ""
            url = card_link.url if card_link and domain_matches(card_link.host, *DOMAINS) else ""
            records.append(person_message(
                message, platform=PLATFORM, sender=who, kind=kind, text=text,
                thread=card_thread or thread, remote_id=remote_id,
                url=url or (f"https://www.upwork.com/ab/messages/rooms/{room}" if room else ""),
                **details))
        return records
    records = []
    if kind == "submission":
        url = first(x.url for x in mail.links_on(*DOMAINS)
                    if _CONTRACT.search(x.path) or re.search(r"(?i)review|submission", x.text))
        if not url and contract:
            url = f"https://www.upwork.com/ab/contracts/{contract}"
        if not url:
            return [system_message(message, platform=PLATFORM, kind=kind,
                                   reason="a submission without a contract link")]
        milestone = first(m.group(1) for m in (_MILESTONE.search(t)
                                               for t in (mail.subject, *mail.lines)) if m)
        title = milestone or message.subject
        records.append(delivery(
            message, platform=PLATFORM, contractor=who, url=url, title=title, thread=thread,
            contract=contract,
            filename=f"Upwork submission {milestone or 'of work'} by {name}".replace(":", " -"),
            note="submitted on Upwork: the files are in the contract's messages or workroom; "
                 "approve it or request changes there (Upwork approves it by itself 14 days "
                 "after submission)",
            review_deadline=message.sent_at + AUTO_APPROVE))
        details["milestone"] = milestone
    records.append(person_message(message, platform=PLATFORM, sender=who, kind=kind,
                                  text=summary(mail, _BUTTON), thread=thread, **details))
    return records


FORMAT = MailFormat(name="upwork", platform=PLATFORM, matches=matches, interpret=interpret)
