"""What the mail platforms' contract remotes share: building the contractor's mail."""

from __future__ import annotations

import itertools
import os
from abc import abstractmethod
from email.message import EmailMessage

from agent.testing import RemoteFixture

_serial = itertools.count(1)


class MailRemote(RemoteFixture):
    """A mail remote: subclasses only say how a finished message is delivered."""

    id_prefix = "contract"

    @abstractmethod
    def deliver(self, raw: bytes, serial: int) -> None:
        """Put one RFC 822 message where the platform will find it."""

    def _send(self, msg: EmailMessage) -> None:
        serial = next(_serial)
        msg["From"] = "Maria Lopez <maria@example.com>"
        msg["To"] = "owner@example.com"
        msg["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
        msg["Message-ID"] = f"<{self.id_prefix}-{serial}-{os.getpid()}@example.com>"
        self.deliver(msg.as_bytes(), serial)

    def add_message(self, text: str) -> None:
        msg = EmailMessage()
        msg["Subject"] = "Progress"
        msg.set_content(text + "\n")
        self._send(msg)

    def add_attachment(self, filename: str, data: bytes) -> None:
        msg = EmailMessage()
        msg["Subject"] = "Files"
        msg.set_content("see attached\n")
        msg.add_attachment(data, maintype="application", subtype="octet-stream",
                           filename=filename)
        self._send(msg)
