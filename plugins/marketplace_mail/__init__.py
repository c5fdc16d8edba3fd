"""Marketplace notification emails: Fiverr, Upwork and Freelancer.com.

Registers one :class:`agent.mailformats.MailFormat` per marketplace. On mail sources
(IMAP, Maildir) each notification is replaced by what it is about: a message from the
marketplace user who wrote it, on that marketplace's platform, and, when work was
delivered, a ``delivery_waiting`` submission for the review queue. The robot address
that sent the email never becomes a contractor or a candidate.

What is dropped: newsletters, job and project recommendations, receipts and account
notices from these senders; they stay in the mailbox, they are not conversations. A
notification that looks like a conversation but cannot be read (a template change) is
kept as it came, marked ``extra["system"] = True``, with a warning in the log.

Each module (:mod:`.fiverr`, :mod:`.upwork`, :mod:`.freelancer`) documents its
senders, kinds and identities. Another marketplace is added by another plugin with its
own ``register_mail_formats`` hook; nothing here or in the core changes.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.mailformats import MailFormat
from agent.plugins import hookimpl
from plugins.marketplace_mail import fiverr, freelancer, upwork

FORMATS: tuple[MailFormat, ...] = (fiverr.FORMAT, upwork.FORMAT, freelancer.FORMAT)

__all__ = ["FORMATS", "register_mail_formats"]


@hookimpl
def register_mail_formats(register: Callable[[MailFormat], None]) -> None:
    for fmt in FORMATS:
        register(fmt)
