"""Reminders: overdue reviews, contractors waiting for a reply, and the periodic report.

For each ``[[notifiers]]`` table (see :mod:`agent.notify`), :func:`run_notifiers`
collects what is due, hands it to the notifier and records what was sent.

Notifiers are safe to fail: each runs in its own guard, a failure is logged and
returned, and nothing is marked as notified, so the reminder is tried again next time.
Every reminder goes out once per notifier (overdue reviews once a day).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.errors import ConfigError
from agent.notify import Event, Notifier, NotifierSettings, build_notifiers
from agent.secrets import scrub

if TYPE_CHECKING:
    from agent.config import Config
    from agent.plugins import PluginHost
    from agent.store import Store

log = logging.getLogger("retainer.notify")


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

