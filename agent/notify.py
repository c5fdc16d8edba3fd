"""Reminders: overdue reviews, contractors waiting for a reply, and the periodic report.

Each ``[[notifiers]]`` table in the config names a ``type`` and its options::

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

Every notifier also takes ``events`` (default: all of ``overdue``, ``waiting``,
``report``), ``waiting_after`` (default ``"24h"``) and ``report_every`` (default
``"7d"``). Plugins add notifier types with the ``register_notifiers`` hook.

Notifiers are safe to fail: each runs in its own guard, a failure is logged and
returned, and nothing is marked as notified, so the reminder is tried again next time.
Every reminder goes out once per notifier (overdue reviews once a day).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.errors import ConfigError, RetainerError
from agent.secrets import Secret, scrub
from agent.store import Store
from agent.store import workflow as wf
from agent.store.core import iso

if TYPE_CHECKING:
    from agent.config import Config
    from agent.plugins import PluginHost

log = logging.getLogger("retainer.notify")

EventKind = Literal["overdue", "waiting", "report"]
EVENT_KINDS: tuple[EventKind, ...] = ("overdue", "waiting", "report")
TIMEOUT = 15.0


@dataclass
class Event:
    """One reminder. ``key`` identifies it for "sent once" bookkeeping."""

    kind: str
    key: str
    title: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)


def _duration(value: Any) -> timedelta:
    from agent.configfile import parse_duration

    return parse_duration(value)


class NotifierSettings(BaseModel):
    """Options every notifier takes."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: str
    name: str = ""
    events: list[EventKind] = Field(default_factory=lambda: list(EVENT_KINDS))
    waiting_after: timedelta = timedelta(hours=24)
    report_every: timedelta = timedelta(days=7)

    @field_validator("waiting_after", "report_every", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> timedelta:
        return _duration(value)


class Notifier:
    """Base class: validate ``settings_model`` and implement :meth:`send`."""

    settings_model: ClassVar[type[NotifierSettings]] = NotifierSettings

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings

    @property
    def name(self) -> str:
        return self.settings.name or self.settings.type

    def send(self, events: list[Event]) -> None:
        raise NotImplementedError


def digest_text(events: list[Event]) -> str:
    parts = []
    for event in events:
        parts.append(f"{event.title}\n{event.text}".rstrip())
    return "\n\n".join(parts) + "\n"


class DesktopSettings(NotifierSettings):
    command: str = "notify-send"


class DesktopNotifier(Notifier):
    """A desktop notification per reminder through ``notify-send`` (skipped if absent)."""

    settings_model = DesktopSettings
    settings: DesktopSettings

    def send(self, events: list[Event]) -> None:
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


def smtp_send(settings: EmailSettings, message: EmailMessage) -> None:
    """Send one message over SMTP: TLS or STARTTLS with certificate checks; plain SMTP
    only to a server on this machine."""
    import smtplib  # here, not at the top: most runs send no email
    import ssl

    port = settings.port or {"tls": 465, "starttls": 587, "none": 25}[settings.security]
    if settings.security == "none" and settings.host not in ("localhost", "127.0.0.1", "::1"):
        raise ConfigError(f'email notifier: security = "none" is only allowed for a server on '
                          f"this machine, not {settings.host}; use tls or starttls")
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if settings.security == "tls":
        smtp = smtplib.SMTP_SSL(settings.host, port, timeout=settings.timeout, context=context)
    else:
        smtp = smtplib.SMTP(settings.host, port, timeout=settings.timeout)
    with smtp:
        if settings.security == "starttls":
            smtp.starttls(context=context)
        if settings.username and settings.password is not None:
            smtp.login(settings.username, settings.password.get_secret_value())
        smtp.send_message(message)


class EmailNotifier(Notifier):
    """One digest email per run with every reminder in it."""

    settings_model = EmailSettings
    settings: EmailSettings

    def send(self, events: list[Event]) -> None:
        message = EmailMessage()
        message["From"] = self.settings.from_
        message["To"] = ", ".join(self.settings.to)
        message["Subject"] = (f"Retainer: {len(events)} reminder"
                              f"{'' if len(events) == 1 else 's'}")
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain="retainer.local")
        message.set_content(digest_text(events))
        smtp_send(self.settings, message)


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


BUILTIN: dict[str, type[Notifier]] = {"desktop": DesktopNotifier, "email": EmailNotifier,
                                      "webhook": WebhookNotifier}


def notifier_types(host: PluginHost | None) -> dict[str, type[Notifier]]:
    types = dict(BUILTIN)
    if host is not None and "register_notifiers" in _hooks(host):
        def register(name: str, cls: type[Notifier]) -> None:
            if not (isinstance(cls, type) and issubclass(cls, Notifier)):
                raise RetainerError(f"register_notifiers: {name!r} is not a Notifier subclass")
            types[name] = cls

        host.call_each("register_notifiers", register=register)
    return types


def _hooks(host: PluginHost) -> set[str]:
    return {name for name in dir(host.pm.hook) if not name.startswith("_")}


def build_notifiers(tables: list[dict[str, Any]], host: PluginHost | None
                    ) -> list[Notifier]:
    """Validate the ``[[notifiers]]`` tables; a bad one is a :class:`ConfigError` naming it."""
    types = notifier_types(host)
    out = []
    for index, table in enumerate(tables, start=1):
        kind = table.get("type")
        if kind not in types:
            raise ConfigError(f"[[notifiers]] #{index}: type must be one of "
                              f"{', '.join(sorted(types))}, not {kind!r}")
        cls = types[kind]
        try:
            settings = cls.settings_model.model_validate(table)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in exc.errors())
            raise ConfigError(f"[[notifiers]] #{index} ({kind}): {problems}") from None
        out.append(cls(settings))
    return out


# -- what to remind about -----------------------------------------------------------------------


def collect_events(store: Store, config: Config, settings: NotifierSettings, now: datetime
                   ) -> list[Event]:
    """The reminders due now for one notifier's settings (before "already sent" filtering)."""
    events: list[Event] = []
    if "overdue" in settings.events:
        from agent.review import queue

        late = [r for r in queue(store, overdue_after=config.agent.review_overdue, now=now)
                if r["overdue"]]
        if late:
            lines = [f"- {r['filename']} from {r['contractor'] or '?'}, "
                     f"{(r['age_hours'] or 0) / 24:.0f} days ({r['id']})" for r in late[:20]]
            if len(late) > 20:
                lines.append(f"- ... and {len(late) - 20} more")
            events.append(Event(
                "overdue", f"overdue:{now.date().isoformat()}",
                f"{len(late)} deliverable{'s' if len(late) != 1 else ''} waiting for your review",
                "\n".join(lines) + "\nReview them with `retainer review`.",
                {"deliverables": [r["id"] for r in late]}))
    if "waiting" in settings.events:
        names = {c["id"]: c["name"] for c in store.contractors()}
        roster = store.roster()
        limit = iso(now - settings.waiting_after) or ""
        for tid, t in wf.thread_activity(store).items():
            cid = roster.contractor_of(t.get("identity"))
            if t["last_dir"] != "in" or cid is None or t["last_at"] > limit:
                continue
            hours = (now - datetime.fromisoformat(t["last_at"].replace("Z", "+00:00"))
                     ).total_seconds() / 3600
            events.append(Event(
                "waiting", f"waiting:{t['last_id']}",
                f"{names.get(cid, cid)} is waiting for your reply",
                f"Their last message came {hours / 24:.1f} days ago and has no answer yet.",
                {"contractor_id": cid, "thread_id": tid, "message_id": t["last_id"]}))
    if "report" in settings.events:
        from agent.report import build

        period = settings.report_every
        index = int(now.timestamp() // max(period.total_seconds(), 1))
        doc = build(store, since=period, now=now)
        t = doc["totals"]
        rating = "-" if t["average_rating"] is None else f"{t['average_rating']:.1f}"
        spend = "-" if t["spend"] is None else f"{t['spend']:,.0f}"
        events.append(Event(
            "report", f"report:{int(period.total_seconds())}:{index}",
            f"Delegation report for the last {period.days or 1} days",
            f"{t['deliverables']} deliverables, spend {spend}, average rating {rating}, "
            f"{t['unreviewed']} waiting for review.\nFull report: `retainer report --html "
            "report.html`.", {"totals": {k: v for k, v in t.items()
                                         if k not in ("previous", "trend")}}))
    return events


@dataclass
class NotifyResult:
    notifier: str
    sent: list[str] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"notifier": self.notifier, "sent": self.sent, "error": self.error}


def run_notifiers(config: Config, host: PluginHost | None, store: Store, *,
                  now: datetime | None = None, dry_run: bool = False,
                  notifiers: list[Notifier] | None = None) -> list[NotifyResult]:
    """Send every reminder that is due and not yet sent. Never raises for a notifier's
    failure: it is logged and returned, and the reminders stay due."""
    now = now or datetime.now(UTC)
    try:
        active = notifiers if notifiers is not None else build_notifiers(config.notifiers, host)
    except ConfigError as exc:
        log.error("notifiers not run: %s", exc)
        return [NotifyResult("config", error=str(exc))]
    results = []
    for index, notifier in enumerate(active):
        result = NotifyResult(notifier.name)
        prefix = f"{index}:{notifier.settings.type}:"
        try:
            done = wf.notified(store)
            events = [e for e in collect_events(store, config, notifier.settings, now)
                      if prefix + e.key not in done]
            if events and not dry_run:
                notifier.send(events)
                with store.writing():
                    wf.mark_notified(store, [prefix + e.key for e in events], now)
            result.sent = [e.key for e in events]
        except Exception as exc:  # a notifier must never stop a sync or the daemon
            result.error = scrub(f"{type(exc).__name__}: {exc}")
            log.warning("notifier %s failed: %s", notifier.name, result.error)
        results.append(result)
    return results


NotifierFactory = Callable[[NotifierSettings], Notifier]
