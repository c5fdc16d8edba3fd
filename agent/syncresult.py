"""What a sync reports: the arguments of the ``records_stored`` and ``source_synced`` hooks.

Kept apart from :mod:`agent.sync` (the engine, which needs the plugin host) so that the
hook specifications can name these types without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class StoredBatch:
    """Records one committed page added or changed (passed to ``records_stored``)."""

    source: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    deliverables: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SyncResult:
    """How one source's sync ended (passed to ``source_synced``)."""

    source: str
    platform: str
    ok: bool = True
    messages_new: int = 0
    messages_updated: int = 0
    deliverables_new: int = 0
    pages: int = 0
    error: str = ""
    error_kind: str = ""  # "auth", "transient", "rate_limited", "error"
    retry_after: float | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration: float = 0.0
    stopped: bool = False
    warnings: list[str] = field(default_factory=list)  # parts that failed while the sync went on

    def as_dict(self) -> dict[str, Any]:
        from agent.store.storage import iso

        return {
            "source": self.source, "platform": self.platform, "ok": self.ok,
            "messages_new": self.messages_new, "messages_updated": self.messages_updated,
            "deliverables_new": self.deliverables_new, "pages": self.pages,
            "error": self.error, "error_kind": self.error_kind, "warnings": list(self.warnings),
            "started_at": iso(self.started_at), "duration": round(self.duration, 3),
        }


__all__ = ["StoredBatch", "SyncResult"]
