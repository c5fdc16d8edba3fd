"""Replies from an IMAP source: feedback and instructions sent over SMTP.

Configured in the source's settings as an optional sub-table::

    [sources.settings.smtp]
    host = "smtp.example.com"
    security = "starttls"                 # "tls" (465) | "starttls" (587) | "none" (loopback only)
    # username and password default to the IMAP ones; from defaults to the IMAP username
    from = "Me <me@example.com>"

A reply carries ``In-Reply-To`` and ``References`` (the thread so far plus the message it
answers), so the contractor's mail program files it in the same conversation.
Certificates are always checked (``ca_file`` names a private CA's certificate).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.connector import Settings
from agent.errors import AuthError, SourceError, TransientError
from agent.models import Outgoing
from agent.secrets import Secret

SMTP_PORTS: dict[str, int] = {"tls": 465, "starttls": 587, "none": 25}


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
        from plugins.imap.settings import is_loopback

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


def send(settings: SmtpSettings, outgoing: Outgoing, *, username: str, password: str | None
         ) -> str:
    """Send ``outgoing``; return its Message-ID. Errors say what to do next."""
    import smtplib  # here, not at the top: registering the plugin stays cheap
    import ssl

    sender = settings.from_ or username
    message = build_message(outgoing, sender)
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file
                                         else None)
    where = f"{settings.host}:{settings.effective_port}"
    try:
        smtp: smtplib.SMTP
        if settings.security == "tls":
            smtp = smtplib.SMTP_SSL(settings.host, settings.effective_port,
                                    timeout=settings.timeout, context=context)
        else:
            smtp = smtplib.SMTP(settings.host, settings.effective_port, timeout=settings.timeout)
        with smtp:
            if settings.security == "starttls":
                smtp.starttls(context=context)
            user = settings.username or username
            secret = (settings.password.get_secret_value() if settings.password is not None
                      else password)
            if secret and settings.security != "none":
                smtp.login(user, secret)
            refused: dict[str, Any] = smtp.send_message(message)
    except smtplib.SMTPAuthenticationError:
        raise AuthError(f"{where} refused the SMTP login; check the username and password "
                        "in [sources.settings.smtp]") from None
    except smtplib.SMTPRecipientsRefused:
        raise SourceError(f"{where} refused the recipient {outgoing.to.address}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise TransientError(f"could not send through {where}: {type(exc).__name__}: {exc}; "
                             "nothing was sent, try again") from None
    if refused:
        raise SourceError(f"{where} refused {', '.join(refused)}")
    return str(message["Message-ID"])
