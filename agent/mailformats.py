"""Notification-email formats: how mail from a marketplace becomes that marketplace's records.

A plugin registers :class:`MailFormat` objects through ``register_mail_formats``. For
sources on mail platforms (IMAP, Maildir), the sync engine offers every incoming
:class:`~agent.models.Message` to the formats in turn; the first that ``matches`` it
replaces it with what ``interpret`` returns (for example a Fiverr message attributed to
the Fiverr user who wrote it, plus a "delivery waiting" submission).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agent.models import Message, Record

log = logging.getLogger("retainer.mailformats")


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


def apply_formats(formats: Sequence[MailFormat], records: Iterable[Record], source: str
                  ) -> list[Record]:
    """Replace notification messages by their interpretation; leave the rest alone.

    A format that raises is logged and the message is kept as it came.
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
                out.extend(fmt.interpret(record))
            except Exception as exc:
                log.error('%s: mail format "%s" failed on %s: %s: %s', source, fmt.name,
                          record.remote_id, type(exc).__name__, exc)
                out.append(record)
            break
        else:
            out.append(record)
    return out
