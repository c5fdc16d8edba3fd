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
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.connector import Settings
from agent.errors import AuthError, SourceError, TransientError
from agent.models import Outgoing
from agent.secrets import Secret

if TYPE_CHECKING:
    import smtplib

    from agent.oauth import TokenManager

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


def send(settings: SmtpSettings, outgoing: Outgoing, *, username: str, password: str | None,
         oauth: TokenManager | None = None) -> str:
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
            if oauth is not None and settings.password is None:
                _oauth_login(smtp, user, oauth, settings, where)
            elif secret and settings.security != "none":
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


def _oauth_login(smtp: smtplib.SMTP, user: str, oauth: TokenManager, settings: SmtpSettings,
                 where: str) -> None:
    """AUTH OAUTHBEARER or XOAUTH2 with the source's token; one refresh if it is refused."""
    import smtplib

    from agent.oauth import SASL_MECHANISMS, choose_mechanism, oauthbearer, xoauth2

    smtp.ehlo_or_helo_if_needed()
    mechanism = choose_mechanism(smtp.esmtp_features.get("auth", "").split(), SASL_MECHANISMS)
    if mechanism is None:
        raise SourceError(f"{where} offers no OAuth 2.0 sign-in (AUTH OAUTHBEARER or XOAUTH2); "
                          "give [sources.settings.smtp] a password instead")
    for attempt in (1, 2):
        token = oauth.access_token()
        initial = (xoauth2(user, token) if mechanism == "XOAUTH2" else
                   oauthbearer(user, token, settings.host, settings.effective_port))
        # after a refusal the server sends an error challenge; the client answers it with
        # an empty response (XOAUTH2) or ^A (RFC 7628) and gets the final 535
        after = "" if mechanism == "XOAUTH2" else "\x01"

        def answer(challenge: bytes | None = None, initial: str = initial,
                   after: str = after) -> str:
            return initial if challenge is None else after

        try:
            smtp.auth(mechanism, answer, initial_response_ok=True)
            return
        except smtplib.SMTPAuthenticationError:
            if attempt == 2:
                raise AuthError(f"{where} refused the OAuth 2.0 sign-in of {user!r}; check the "
                                f"username, then run `retainer auth {oauth.source}`") from None
            oauth.force_refresh()
