"""What a notifier is: the interface a plugin implements to deliver reminders.

Each ``[[notifiers]]`` table in the config names a ``type`` and its options. The types
come from plugins through the ``register_notifiers`` hook, as subclasses of
:class:`Notifier` with a :class:`NotifierSettings` model; the builtin ones (``desktop``,
``email``, ``webhook``) are the :mod:`plugins.notifiers` plugin's, loaded like any other.
What is due and what was sent is :mod:`agent.reminders`.

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
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.durations import parse_duration
from agent.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

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
        return parse_duration(value)


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


class NotifierRegistry(Protocol):
    """What holds the registered notifier types (the plugin host)."""

    @property
    def notifiers(self) -> Mapping[str, type[Notifier]]: ...


def notifier_types(host: NotifierRegistry | None) -> dict[str, type[Notifier]]:
    """The notifier types the plugins registered (``register_notifiers``), by name."""
    return dict(host.notifiers) if host is not None else {}


def known_types(types: dict[str, type[Notifier]]) -> str:
    """The type names for an error message (or why there are none)."""
    if types:
        return ", ".join(sorted(types))
    return ("(none: no plugin registers notifiers; is the builtin `notifiers` plugin "
            "disabled? see `retainer plugins`)")


def build_notifiers(tables: list[dict[str, Any]], host: NotifierRegistry | None
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
