"""Sending mail over SMTP: the one sender every plugin uses.

The IMAP platform sends replies with it (``[sources.settings.smtp]``) and the email
notifier sends reminder digests with it (``[[notifiers]] type = "email"``). Certificates
are always checked; plain SMTP (``security = "none"``) is only allowed to a server on this
machine, and a password is never sent over it. Errors are domain errors whose messages
say what to do next: :class:`~agent.errors.AuthError` when the login is refused,
:class:`~agent.errors.TransientError` when nothing was sent and trying again may help,
:class:`~agent.errors.SourceError` for the rest.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent.errors import AuthError, ConfigError, SourceError, TransientError

if TYPE_CHECKING:
    import smtplib
    from email.message import EmailMessage

    from agent.oauth import TokenManager

Security = Literal["tls", "starttls", "none"]

#: The usual port of each ``security``: SMTPS, submission with STARTTLS, plain SMTP.
SMTP_PORTS: dict[str, int] = {"tls": 465, "starttls": 587, "none": 25}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to send.

    :param host: the SMTP server's name.
    :param port: ``None``: the usual port of ``security`` (:data:`SMTP_PORTS`).
    :param security: ``"tls"`` (SMTPS), ``"starttls"`` or ``"none"`` (loopback only).
    :param username: the login; with no ``password`` and no ``oauth`` nothing logs in.
    :param password: the plain secret (never logged, never put in an error).
    :param oauth: sign in with this OAuth 2.0 token (SASL OAUTHBEARER or XOAUTH2) instead
        of a password; a refused token is refreshed once.
    :param ca_file: a private CA's certificate to trust as well.
    :param timeout: seconds for the connection and each reply.
    :param settings: where the user fixes these settings, for error messages
        (e.g. ``"[sources.settings.smtp]"``).
    """

    host: str
    port: int | None = None
    security: Security = "starttls"
    username: str = ""
    password: str | None = None
    oauth: TokenManager | None = None
    ca_file: Path | None = None
    timeout: float = 60.0
    settings: str = "the SMTP settings"

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else SMTP_PORTS[self.security]

    @property
    def where(self) -> str:
        return f"{self.host}:{self.effective_port}"


def send_message(server: SmtpServer, message: EmailMessage) -> None:
    """Send ``message`` to its recipients through ``server``, or raise a domain error."""
    import smtplib  # here, not at the top: most runs send no email
    import ssl

    if server.security == "none" and not is_loopback(server.host):
        raise ConfigError(f'{server.settings}: security = "none" is only allowed for a server '
                          f"on this machine, not {server.host}; use tls or starttls")
    where = server.where
    try:
        context = ssl.create_default_context(
            cafile=str(server.ca_file) if server.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{server.settings}: cannot load ca_file {server.ca_file} ({exc}); "
                          "it must be a PEM certificate") from None
    try:
        smtp: smtplib.SMTP
        if server.security == "tls":
            smtp = smtplib.SMTP_SSL(server.host, server.effective_port, timeout=server.timeout,
                                    context=context)
        else:
            smtp = smtplib.SMTP(server.host, server.effective_port, timeout=server.timeout)
        with smtp:
            if server.security == "starttls":
                smtp.starttls(context=context)
            if server.oauth is not None and server.password is None:
                _oauth_login(smtp, server, server.oauth)
            elif server.password and server.username and server.security != "none":
                smtp.login(server.username, server.password)
            refused: dict[str, Any] = smtp.send_message(message)
    except smtplib.SMTPAuthenticationError:
        raise AuthError(f"{where} refused the SMTP login; check the username and password "
                        f"in {server.settings}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise SourceError(f"{where} refused the recipient {', '.join(exc.recipients)}; "
                          "nothing was sent") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise TransientError(f"could not send through {where}: {type(exc).__name__}: {exc}; "
                             "nothing was sent, try again") from None
    if refused:
        raise SourceError(f"{where} refused {', '.join(refused)}")


def _oauth_login(smtp: smtplib.SMTP, server: SmtpServer, oauth: TokenManager) -> None:
    """AUTH OAUTHBEARER or XOAUTH2 with the source's token; one refresh if it is refused."""
    import smtplib

    from agent.oauth import SASL_MECHANISMS, choose_mechanism, oauthbearer, xoauth2

    where, user = server.where, server.username
    smtp.ehlo_or_helo_if_needed()
    mechanism = choose_mechanism(smtp.esmtp_features.get("auth", "").split(), SASL_MECHANISMS)
    if mechanism is None:
        raise SourceError(f"{where} offers no OAuth 2.0 sign-in (AUTH OAUTHBEARER or XOAUTH2); "
                          f"give {server.settings} a password instead")
    for attempt in (1, 2):
        token = oauth.access_token()
        initial = (xoauth2(user, token) if mechanism == "XOAUTH2" else
                   oauthbearer(user, token, server.host, server.effective_port))
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


__all__ = ["SMTP_PORTS", "Security", "SmtpServer", "is_loopback", "send_message"]
