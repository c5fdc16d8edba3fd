"""Notification-email formats: how mail from a marketplace becomes that marketplace's records.

A plugin registers :class:`MailFormat` objects through ``register_mail_formats``. For
sources on mail platforms (IMAP, Maildir), the sync engine offers every incoming
:class:`~agent.models.Message` to the formats in turn; the first that ``matches`` it
replaces it with what ``interpret`` returns (for example a Fiverr message attributed to
the Fiverr user who wrote it, plus a "delivery waiting" submission).

Contract for ``interpret``:

* return the records that replace the notification, in the order they should be
  stored (a :class:`~agent.models.Submission` before the message that announces it, so
  the message is already attributed to the contractor it hires);
* return an empty sequence to drop the mail (newsletters, receipts);
* never return a record whose sender or contractor is the notification's own address:
  that address is a robot, not a contractor;
* raising is allowed but is a bug: the mail is then kept as it came and the error logged.

:func:`sender_domain` and :func:`domain_matches` help write a cheap ``matches``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agent.models import Contract, Message, Record, Submission

log = logging.getLogger("retainer.mailformats")

#: ``Message.extra`` key under which formats describe the notification a record came from
#: (``{"platform", "kind", "url", ...}``).
NOTIFICATION = "notification"


@dataclass(frozen=True)
class MailFormat:
    """One marketplace's notification emails.

    :param name: a short unique name (``"fiverr"``).
    :param platform: the platform the conversations are attributed to.
    :param matches: true for messages in this format (cheap: look at sender/subject).
    :param interpret: the records that replace the notification; an empty sequence drops it.
    """

    name: str
    platform: str
    matches: Callable[[Message], bool]
    interpret: Callable[[Message], Sequence[Record]]


def sender_domain(message: Message) -> str:
    """The lowercased domain of an email sender's address (``""`` for other platforms)."""
    if message.sender.platform != "email":
        return ""
    address = message.sender.address.strip().lower()
    local, at, domain = address.rpartition("@")
    return domain.strip(".>") if at and local else ""


def domain_matches(domain: str, *suffixes: str) -> bool:
    """True if ``domain`` is one of ``suffixes`` or a subdomain of one.

    ``e.fiverr.com`` matches ``fiverr.com``; ``fiverr.com.evil.example`` and
    ``notfiverr.com`` do not.
    """
    domain = domain.strip().lower().rstrip(".")
    for suffix in suffixes:
        suffix = suffix.strip().lower().strip(".")
        if suffix and (domain == suffix or domain.endswith("." + suffix)):
            return True
    return False


def _valid(records: object) -> list[Record] | None:
    if isinstance(records, str | bytes) or not isinstance(records, Iterable):
        return None
    out = list(records)
    if all(isinstance(r, Message | Submission | Contract) for r in out):
        return out
    return None


def apply_formats(formats: Sequence[MailFormat], records: Iterable[Record], source: str
                  ) -> list[Record]:
    """Replace notification messages by their interpretation; leave the rest alone.

    A format that raises, or returns something other than records, is logged and the
    message is kept as it came. A dropped notification is logged at INFO level.
    """
    out: list[Record] = []
    for record in records:
        if not formats or not isinstance(record, Message):
            out.append(record)
            continue
        for fmt in formats:
            try:
                if not fmt.matches(record):
                    continue
                replaced = _valid(fmt.interpret(record))
            except Exception as exc:
                log.error('%s: mail format "%s" failed on %s: %s: %s; the mail is kept as it '
                          "came (report this to the plugin's author)", source, fmt.name,
                          record.remote_id, type(exc).__name__, exc)
                out.append(record)
                break
            if replaced is None:
                log.error('%s: mail format "%s" returned something other than records for %s; '
                          "the mail is kept as it came (report this to the plugin's author)",
                          source, fmt.name, record.remote_id)
                out.append(record)
            elif not replaced:
                log.info('%s: dropped %s "%s" from %s (%s mail that is not a conversation)',
                         source, record.remote_id, record.subject[:80], record.sender.address,
                         fmt.name)
            else:
                out.extend(replaced)
            break
        else:
            out.append(record)
    return out


__all__ = ["NOTIFICATION", "MailFormat", "apply_formats", "domain_matches", "sender_domain"]
