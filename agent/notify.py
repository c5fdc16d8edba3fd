"""Reminders: overdue reviews, contractors waiting for a reply, and the periodic report.

Each ``[[notifiers]]`` table in the config names a ``type`` and its options. The types
come from plugins through the ``register_notifiers`` hook; the builtin ones (``desktop``,
``email``, ``webhook``) are the :mod:`plugins.notifiers` plugin's, loaded like any other.
This module decides what is due and records what was sent.

Every notifier also takes ``events`` (default: all of ``overdue``, ``waiting``,
``report``), ``waiting_after`` (default ``"24h"``) and ``report_every`` (default
``"7d"``).

Notifiers are safe to fail: each runs in its own guard, a failure is logged and
returned, and nothing is marked as notified, so the reminder is tried again next time.
Every reminder goes out once per notifier (overdue reviews once a day).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.errors import ConfigError
from agent.secrets import scrub

if TYPE_CHECKING:
    from agent.config import Config
    from agent.plugins import PluginHost
    from agent.store import Store

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
    from agent.config.file import parse_duration

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


def notifier_types(host: PluginHost | None) -> dict[str, type[Notifier]]:
    """The notifier types the plugins registered (``register_notifiers``), by name."""
    return dict(host.notifiers) if host is not None else {}


def known_types(types: dict[str, type[Notifier]]) -> str:
    """The type names for an error message (or why there are none)."""
    if types:
        return ", ".join(sorted(types))
    return ("(none: no plugin registers notifiers; is the builtin `notifiers` plugin "
            "disabled? see `retainer plugins`)")


def build_notifiers(tables: list[dict[str, Any]], host: PluginHost | None
                    ) -> list[Notifier]:
    """Validate the ``[[notifiers]]`` tables; a bad one is a :class:`ConfigError` naming it."""
    types = notifier_types(host)
    out = []
    for index, table in enumerate(tables, start=1):
        kind = table.get("type")
        if kind not in types:
            raise ConfigError(f"[[notifiers]] #{index}: type must be one of "
                              f"{known_types(types)}, not {kind!r}")
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
    from agent.store import workflow as wf
    from agent.store.core import iso

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
    from agent.store import workflow as wf

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

