"""Reminder notifiers: ``desktop``, ``email`` and ``webhook`` (``[[notifiers]]`` types).

Declared in pyproject as ``[project.entry-points.retainer] notifiers = "plugins.notifiers"``
and registered through the ``register_notifiers`` hook, exactly as a third-party plugin
adds its own: disable this plugin (``RETAINER_DISABLE_PLUGINS=notifiers``) and these
types are gone; another plugin that registers one of these names is refused, naming
both plugins. What a reminder holds and when it is due is the host's
(:mod:`agent.notify`); these classes only deliver them::

    [[notifiers]]
    type = "desktop"                       # notify-send, when it is installed

    [[notifiers]]
    type = "email"                         # a digest over SMTP
    host = "smtp.example.com"
    port = 587
    security = "starttls"                  # "tls" | "starttls" | "none" (loopback only)
    username = "me@example.com"
    password = { env = "RETAINER_SMTP_PASSWORD" }
    from = "retainer@example.com"
    to = ["me@example.com"]

    [[notifiers]]
    type = "webhook"                       # Slack-compatible JSON: {"text": ...}
    url = { env = "RETAINER_SLACK_WEBHOOK" }
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator

from agent.errors import RetainerError
from agent.notify import TIMEOUT, Event, Notifier, NotifierSettings, digest_text
from agent.plugins import hookimpl
from agent.secrets import Secret

log = logging.getLogger("retainer.plugins.notifiers")


class DesktopSettings(NotifierSettings):
    command: str = "notify-send"


class DesktopNotifier(Notifier):
    """A desktop notification per reminder through ``notify-send`` (skipped if absent)."""

    settings_model = DesktopSettings
    settings: DesktopSettings

    def send(self, events: list[Event]) -> None:
        import shutil  # here, not at the top: loading the plugin stays cheap
        import subprocess

        command = shutil.which(self.settings.command)
        if command is None:
            log.info("desktop notifier: %s is not installed; skipped", self.settings.command)
            return
        for event in events:
            subprocess.run([command, "--app-name=Retainer", event.title, event.text[:500]],
                           check=True, timeout=TIMEOUT, capture_output=True)


class EmailSettings(NotifierSettings):
    host: str
    port: int | None = Field(None, ge=1, le=65535)
    security: Literal["tls", "starttls", "none"] = "starttls"
    username: str = ""
    password: Secret | None = None
    from_: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    timeout: float = Field(TIMEOUT, gt=0, le=300)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return value.strip()


class EmailNotifier(Notifier):
    """One digest email per run with every reminder in it (sent by :mod:`agent.smtp`)."""

    settings_model = EmailSettings
    settings: EmailSettings

    def send(self, events: list[Event]) -> None:
        from email.message import EmailMessage
        from email.utils import format_datetime, make_msgid

        from agent.smtp import SmtpServer, send_message

        message = EmailMessage()
        message["From"] = self.settings.from_
        message["To"] = ", ".join(self.settings.to)
        message["Subject"] = (f"Retainer: {len(events)} reminder"
                              f"{'' if len(events) == 1 else 's'}")
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain="retainer.local")
        message.set_content(digest_text(events))
        s = self.settings
        send_message(SmtpServer(
            s.host, s.port, s.security, username=s.username,
            password=s.password.get_secret_value() if s.password is not None else None,
            timeout=s.timeout, settings="the email notifier"), message)


class WebhookSettings(NotifierSettings):
    url: Secret
    timeout: float = Field(TIMEOUT, gt=0, le=300)


class WebhookNotifier(Notifier):
    """POST ``{"text": ...}`` (Slack, Mattermost, Rocket.Chat and Discord's /slack accept it)."""

    settings_model = WebhookSettings
    settings: WebhookSettings

    def send(self, events: list[Event]) -> None:
        import requests

        payload = {"text": digest_text(events).strip(),
                   "retainer": [{"kind": e.kind, "key": e.key, "title": e.title, **e.data}
                                for e in events]}
        url = self.settings.url.get_secret_value()
        try:
            response = requests.post(url, json=payload, timeout=self.settings.timeout)
        except requests.RequestException as exc:  # its text holds the URL: the secret
            from urllib.parse import urlsplit

            raise RetainerError(f"webhook to {urlsplit(url).hostname} failed "
                                f"({type(exc).__name__}); check the URL and the network"
                                ) from None
        if response.status_code >= 300:
            raise RetainerError(f"webhook answered HTTP {response.status_code}")


NOTIFIERS: dict[str, type[Notifier]] = {"desktop": DesktopNotifier, "email": EmailNotifier,
                                        "webhook": WebhookNotifier}


@hookimpl
def register_notifiers(register: Callable[[str, type[Notifier]], None]) -> None:
    for name, cls in NOTIFIERS.items():
        register(name, cls)


__all__ = [
    "NOTIFIERS",
    "DesktopNotifier",
    "EmailNotifier",
    "WebhookNotifier",
    "register_notifiers",
]
