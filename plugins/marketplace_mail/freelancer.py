"""Freelancer.com notification emails.

Senders: ``noreply@freelancer.com`` and ``noreply@notifications.freelancer.com``.

===============  ==================================================================
kind             records
===============  ==================================================================
``message``      a message from the freelancer, in ``freelancer:thread:<id>`` (from
                 the ``/messages/thread/<id>`` link)
``submission``   a milestone release request or submitted work: a ``delivery_waiting``
                 submission (Freelancer.com has no "submitted work" object; the files
                 are in the project's messages), then a message from the freelancer
project         dropped ("these projects might interest you", newsletters, receipts)
recommendations
anything else    kept from the Freelancer address, marked ``extra["system"]``
===============  ==================================================================

The freelancer is ``Identity("freelancer", <username>, name,
"https://www.freelancer.com/u/<username>")``, the username taken from the profile link
(``/u/<username>``) or the subject.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent.mailformats import MailFormat, domain_matches, sender_domain
from agent.models import Identity, Message, Record
from plugins.marketplace_mail.common import (
    Mail,
    classify,
    delivery,
    first,
    log,
    person_message,
    summary,
    system_message,
    text_between,
    unquote_message,
    username_from_subject,
    username_ok,
)

PLATFORM = "freelancer"
DOMAINS = ("freelancer.com",)

_DROP = re.compile(
    r"(?i)projects? (?:that )?might interest you|matching your skills|recommended projects|"
    r"important projects|newsletter|\btips\b|receipt|invoice|verif(?:y|ication)|password|"
    r"security|welcome to freelancer|membership|survey|contests? for you|jobs? for you|"
    r"\d+ ?% off|upgrade"
)
_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("submission", re.compile(
        r"(?i)request(?:ed|s)? (?:that you )?(?:the |a )?(?:release|(?:milestone )?payment release|"
        r"milestone (?:payment|release))|release request|milestone request|"
        r"(?:submitted|uploaded) (?:work|a deliverable|deliverables|files?)|"
        r"marked .{0,60}(?:as )?complete")),
    ("message", re.compile(r"(?i)new messages?|sent you (?:a )?messages?|messaged you|"
                           r"message from")),
)
_PROFILE = re.compile(r"^/u/([^/?#]+)/?$")
_THREAD = re.compile(r"^/messages/thread/(\d+)")
_PROJECT = re.compile(r"^/projects/(.+?)/?$")
#: project pages only the employer sees (recommendation emails link the public page)
_PRIVATE_PROJECT = re.compile(r"/(?:payments|milestones|files)(?:[/?#]|$)")
_PROJECT_TAIL = re.compile(r"/(?:payments|details|proposals|milestones|files|reviews)$")
_SUBJECT_USER = (
    re.compile(r"(?i)\bfrom @?([A-Za-z0-9][A-Za-z0-9_.\-]+)\b"),
    re.compile(r"^@?([A-Za-z0-9][A-Za-z0-9_.\-]+) (?:has |just )?(?:sent|requested|submitted|"
               r"uploaded|marked)\b"),
)
_AMOUNT = re.compile(r"([$\u20ac\u00a3]\s?\d[\d,]*(?:\.\d{2})?(?:\s?[A-Z]{3}\b)?|"
                     r"\d[\d,]*(?:\.\d{2})?\s?(?:USD|EUR|GBP|AUD|CAD|INR)\b)")
_FOR = re.compile(r"(?i)\bfor (?:the (?:milestone|project) )?[\"\u201c](.+?)[\"\u201d]")
_BUTTON = re.compile(r"(?i)^(?:view|reply|respond|go to|open|see|release|review)\b|"
                     r"unsubscribe|\u00a9|^need help|this (?:e-?mail|message) was sent")


def matches(message: Message) -> bool:
    return domain_matches(sender_domain(message), *DOMAINS)


def freelancer(mail: Mail) -> Identity | None:
    username = ""
    found = mail.find_link(_PROFILE, *DOMAINS)
    if found and username_ok(found[1].group(1)):
        username = found[1].group(1)
    if not username:
        username = username_from_subject(mail.subject, _SUBJECT_USER)
    if not username:
        return None
    name = found[0].text if found and found[0].text and len(found[0].text) <= 60 else username
    return Identity(PLATFORM, username, name=name,
                    profile_url=f"https://www.freelancer.com/u/{username}")


def project(mail: Mail) -> tuple[str, str]:
    """``(project key, project url)``: the numeric id when the URL ends in one, else the slug."""
    found = mail.find_link(_PROJECT, *DOMAINS)
    if not found:
        return "", ""
    slug = _PROJECT_TAIL.sub("", found[1].group(1))
    number = re.search(r"-(\d{5,})(?:\.html)?$", slug)
    return (number.group(1) if number else slug), found[0].url


def body(mail: Mail, who: Identity) -> str:
    found = mail.select_text(".message-content", ".message-body", "blockquote")
    if found:
        return unquote_message("\n\n".join(found))
    start = re.compile(r"(?i)sent you (?:a )?messages?|new messages?|message from|@?"
                       + re.escape(who.address) + r"\b")
    text = text_between(mail.lines, start, _BUTTON)
    return unquote_message(text) or mail.subject




def interpret(message: Message) -> Sequence[Record]:
    mail = Mail(message)
    thread_link = mail.find_link(_THREAD, *DOMAINS)
    thread_id = thread_link[1].group(1) if thread_link else ""
    project_key, project_url = project(mail)
    private = bool(thread_id) or bool(project_url and _PRIVATE_PROJECT.search(project_url))
    kind = classify(mail, _KINDS, _DROP, conversation_link=private)
    if kind == "drop":
        log.debug("%s: Freelancer.com mail %r is not a conversation; dropped",
                  message.remote_id, message.subject[:80])
        return []
    if not kind:
        if thread_id or project_key:
            return [system_message(message, platform=PLATFORM, kind="unknown",
                                   reason="no known notification kind", thread_id=thread_id,
                                   project=project_key)]
        log.debug("%s: Freelancer.com mail %r names no thread or project; dropped",
                  message.remote_id, message.subject[:80])
        return []
    who = freelancer(mail)
    if who is None:
        return [system_message(message, platform=PLATFORM, kind=kind,
                               reason="no freelancer username found", thread_id=thread_id,
                               project=project_key)]
    if thread_id:
        thread = f"freelancer:thread:{thread_id}"
    elif project_key:
        thread = f"freelancer:project:{project_key}"
    else:
        thread = f"freelancer:user:{who.address.lower()}"
    thread_url = thread_link[0].url if thread_link else ""
    details = {"thread_id": thread_id, "project": project_key}
    if kind == "message":
        return [person_message(message, platform=PLATFORM, sender=who, kind=kind,
                               text=body(mail, who), thread=thread,
                               url=thread_url or project_url, **details)]
    url = project_url or thread_url
    if not url:
        return [system_message(message, platform=PLATFORM, kind=kind,
                               reason="a milestone request without a project link")]
    described = first(m.group(1) for m in (_FOR.search(t) for t in (mail.subject, *mail.lines))
                      if m)
    amount = first(m.group(1).strip() for m in (_AMOUNT.search(t) for t in mail.lines
                                                if re.search(r"(?i)milestone|release", t))
                   if m)
    label = described or (f"project {project_key}" if project_key else "milestone")
    return [
        delivery(message, platform=PLATFORM, contractor=who, url=url, title=described or
                 message.subject, thread=thread, contract=project_key,
                 filename=f"Freelancer.com milestone {label} by {who.address}".replace(":", " -"),
                 note="release requested on Freelancer.com: the work is in the project's "
                      "messages; release the milestone there once it is reviewed"),
        person_message(message, platform=PLATFORM, sender=who, kind=kind, text=summary(mail, _BUTTON),
                       thread=thread, url=url, amount=amount, milestone=described, **details),
    ]


FORMAT = MailFormat(name="freelancer", platform=PLATFORM, matches=matches, interpret=interpret)
