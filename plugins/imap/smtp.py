"""Replies from an IMAP source: feedback and instructions sent over SMTP.

Configured in the source's settings as an optional sub-table::

    [sources.settings.smtp]
    host = "smtp.example.com"
    security = "starttls"                 # "tls" (465) | "starttls" (587) | "none" (loopback only)
    # username and password default to the IMAP ones; from defaults to the IMAP username
    from = "Me <me@example.com>"

With ``auth = "oauth2"`` on the IMAP source, sending signs in with the same OAuth 2.0
token (SASL OAUTHBEARER or XOAUTH2, whichever the server advertises) unless the SMTP table
names its own password.

A reply carries ``In-Reply-To`` and ``References`` (the thread so far plus the message it
answers), so the contractor's mail program files it in the same conversation.
Certificates are always checked (``ca_file`` names a private CA's certificate).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from agent.connector import Settings
from agent.models import Outgoing
from agent.secrets import Secret
from agent.smtp import SMTP_PORTS, is_loopback

if TYPE_CHECKING:
    from agent.oauth import TokenManager


class SmtpSettings(Settings):
    """``[sources.settings.smtp]``: where replies from this mailbox are sent."""

    host: str = Field(description="the SMTP server, e.g. smtp.example.com")
    port: int | None = Field(None, ge=1, le=65535, description="default 465 / 587 / 25")
    security: Literal["tls", "starttls", "none"] = "starttls"
    username: str | None = Field(None, description="default: the IMAP username")
    password: Secret | None = Field(None, description="default: the IMAP password")
    from_: str | None = Field(None, alias="from", description="default: the IMAP username")
    ca_file: Path | None = None
    timeout: float = Field(60.0, gt=0, le=600)

    model_config = {"populate_by_name": True}

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if not value or any(ch.isspace() for ch in value) or "/" in value:
            raise ValueError("host must be a server name like smtp.example.com")
        return value

    @model_validator(mode="after")
    def _plain_only_locally(self) -> SmtpSettings:
        if self.security == "none" and not is_loopback(self.host):
            raise ValueError(f'security = "none" would send mail to {self.host} unencrypted; '
                             'it is only allowed for a server on this machine')
        return self

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else SMTP_PORTS[self.security]


def build_message(outgoing: Outgoing, sender: str, *, now: datetime | None = None
                  ) -> EmailMessage:
    """The reply as a MIME message, threaded with In-Reply-To and References."""
    message = EmailMessage()
    message["From"] = sender
    to = outgoing.to
    message["To"] = formataddr((to.name, to.address)) if to.name else to.address
    message["Subject"] = outgoing.subject or "(no subject)"
    message["Date"] = format_datetime(now or datetime.now(UTC))
    domain = parseaddr(sender)[1].rpartition("@")[2] or "retainer.local"
    message["Message-ID"] = make_msgid(domain=domain)
    if outgoing.in_reply_to:
        message["In-Reply-To"] = outgoing.in_reply_to
    references = list(outgoing.references)
    if outgoing.in_reply_to and outgoing.in_reply_to not in references:
        references.append(outgoing.in_reply_to)
    if references:
        message["References"] = " ".join(references)
    message["X-Mailer"] = "Retainer"
    message.set_content(outgoing.text)
    return message


def send(settings: SmtpSettings, outgoing: Outgoing, *, username: str, password: str | None,
         oauth: TokenManager | None = None) -> str:
    """Send ``outgoing``; return its Message-ID. Errors say what to do next."""
    from agent.smtp import SmtpServer, send_message

    message = build_message(outgoing, settings.from_ or username)
    own_password = settings.password.get_secret_value() if settings.password is not None else None
    server = SmtpServer(
        settings.host, settings.port, settings.security,
        username=settings.username or username,
        password=own_password if own_password is not None or oauth is not None else password,
        oauth=oauth if settings.password is None else None,
        ca_file=settings.ca_file, timeout=settings.timeout,
        settings="[sources.settings.smtp]")
    send_message(server, message)
    return str(message["Message-ID"])
