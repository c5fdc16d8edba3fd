"""The typed records connectors yield, and the documents the store gives back.

Connectors build the frozen dataclasses; only :mod:`agent.store` turns them into
TinyDB documents. Times are timezone-aware :class:`~datetime.datetime` values.

What the store's read side returns is typed with the :class:`~typing.TypedDict` classes
at the end (:class:`MessageRecord`, :class:`DeliverableRecord`, ...): plain JSON objects
as stored, so ``--json`` output keeps its shape, with their keys known to mypy. Times
there are ISO 8601 text in UTC (``2026-03-04T09:30:00Z``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NotRequired, TypeAlias, TypedDict

Direction: TypeAlias = Literal["in", "out"]
AttachmentStatus: TypeAlias = Literal[
    "stored",  # the bytes are in ``data`` or ``path``
    "too_large",  # over the size cap: recorded, not downloaded
    "not_downloaded",  # skipped on purpose (e.g. sender is not a contractor)
    "delivery_waiting",  # a marketplace says work was delivered; fetch it there
    "link",  # the deliverable is a URL
    "unavailable",  # the platform would not hand the file over (``note`` says why)
]
ContractorStatus: TypeAlias = Literal["trial", "core", "bench", "retired"]
CONTRACTOR_STATUSES: tuple[ContractorStatus, ...] = ("trial", "core", "bench", "retired")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who someone is on one platform: an email address or a platform user id."""

    platform: str  # "email", "upwork", "freelancer", "fiverr", ...
    address: str  # email address (any case) or the platform's user id
    name: str = ""
    profile_url: str = ""

    @property
    def key(self) -> str:
        """The normalized identity key the roster indexes (``email:maria@example.com``)."""
        return f"{self.platform}:{self.address.strip().lower()}"


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file (or link) that came with a message or was submitted as work.

    ``filename`` is what the remote side called it; the store sanitizes it before it
    touches the filesystem. Give the bytes as ``data`` or as ``path``: any readable
    local file (a download in ``SourceContext.scratch_dir``, or a file in a synced
    folder). The store copies it into its own files folder and never moves, changes or
    deletes the original.

    ``handover_sha256``, set only together with ``path``: the file is a temporary one
    of these bytes in ``SourceContext.scratch_dir`` (written 0600 by the connector, e.g.
    by a mail reader process), which the store takes over: it moves it into its files
    folder instead of copying it, or deletes it when it already holds those bytes.

    ``replaces`` names an earlier version of the same piece of work: the remote id of
    the Submission it replaces, or for a message attachment
    ``"<message remote_id>#<attachment remote_id>"``. Leave it empty when the platform
    does not say; the store still links versions it can tell (same contractor, same
    thread, same file name apart from version marks such as ``-v2`` or ``final``).
    """

    filename: str
    content_type: str = "application/octet-stream"
    size: int | None = None
    data: bytes | None = None
    path: Path | None = None
    url: str = ""
    remote_id: str = ""
    status: AttachmentStatus = "stored"
    inline: bool = False  # inline images (signatures, logos) are not deliverables
    note: str = ""
    replaces: str = ""
    handover_sha256: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One message in a thread.

    ``remote_id`` must be unique and stable within the source: the store upserts by
    (source, remote_id), so yielding the same message twice is harmless.
    ``direction`` may be left ``None`` for mail: the host compares the sender with the
    owner's addresses. ``platform`` names the platform the conversation happened on
    when it differs from the source's (a Fiverr notification read from an inbox).

    ``under_contract=True`` says the sender works for the owner under a contract on this
    platform: the store then adds them to the roster (as ``trial``) if they are not on it.
    Leave it ``None`` when the platform does not say; unknown senders become candidates.
    """

    remote_id: str
    sent_at: datetime
    sender: Identity
    subject: str = ""
    text: str = ""
    thread_remote_id: str = ""
    recipients: tuple[Identity, ...] = ()
    direction: Direction | None = None
    attachments: tuple[Attachment, ...] = ()
    platform: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    html: str = ""  # the HTML body, for mail formats; not stored
    under_contract: bool | None = None


@dataclass(frozen=True, slots=True)
class Submission:
    """Work submitted outside a message (a marketplace milestone submission).

    ``under_contract`` states whether the contractor works under a contract on this
    platform. ``True``: an unknown contractor joins the roster as ``trial`` and the file
    is stored. ``False``: an unknown contractor becomes a candidate and the work is
    recorded with ``status="not_downloaded"``. ``None`` (not stated) is deprecated: it
    still hires the contractor, as before, with a warning. ``replaces`` is the remote id
    of the Submission this one is a new version of (see :class:`Attachment`).
    """

    remote_id: str
    submitted_at: datetime
    contractor: Identity
    attachment: Attachment
    title: str = ""
    thread_remote_id: str = ""
    contract_remote_id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    platform: str | None = None  # as for Message: when it differs from the source's
    message_remote_id: str = ""  # the message that announced it, if any
    under_contract: bool | None = None
    replaces: str = ""


@dataclass(frozen=True, slots=True)
class Contract:
    """An engagement on a marketplace: a contract, offer, project or order."""

    remote_id: str
    contractor: Identity
    title: str = ""
    status: str = ""
    kind: str = ""  # "hourly", "fixed", "order", ...
    started_at: datetime | None = None
    ended_at: datetime | None = None
    rate: float | None = None  # per hour for hourly contracts
    budget: float | None = None
    spent: float | None = None  # what the owner paid so far, where the platform says
    currency: str = ""
    thread_remote_id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


Record: TypeAlias = Message | Submission | Contract
Cursor: TypeAlias = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    """A batch of records and the cursor to commit once they are stored.

    The host stores ``records`` first and only then saves ``cursor``; after a crash
    the connector is asked again from the previous cursor, and the idempotent upsert
    absorbs the repeats. ``cursor=None`` leaves the stored cursor as it is.
    ``progress`` is ``(done, total)`` for a progress display, when known.

    ``state`` is per-item plugin state committed with the page (e.g. ``{"logo.png":
    "2026-03-04T09:30:00+00:00"}`` for a file already delivered): each key is set to its
    JSON-able value, or removed when the value is ``None``. The host writes it after the
    records and before the cursor, so it is never behind the store; the connector reads
    the committed state as ``SourceContext.state``.
    """

    records: Sequence[Record]
    cursor: Cursor | None = None
    progress: tuple[int, int] | None = None
    state: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message the owner sends to a contractor's thread (feedback, instructions)."""

    to: Identity
    text: str
    subject: str = ""
    thread_remote_id: str = ""
    in_reply_to: str = ""  # e.g. the Message-ID header for mail
    references: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


# -- what the store's read side returns -------------------------------------------------------


class SenderRef(TypedDict):
    address: str
    name: str
    platform: str


class RecipientRef(TypedDict):
    address: str
    name: str


class AttachmentEntry(TypedDict):
    """One attachment as its message records it; a deliverable's id when one was made."""

    filename: str
    content_type: str
    size: int | None
    status: str
    inline: bool
    deliverable_id: NotRequired[str]
    sha256: NotRequired[str | None]


class MessageRecord(TypedDict):
    """A stored message. ``contractor_id`` is resolved through the roster in listings."""

    id: str
    source: str
    platform: str
    remote_id: str
    thread_id: str
    thread_remote_id: str
    contractor_id: str | None
    identity: str | None  # the counterpart's identity key; None for the owner's own mail
    direction: str  # "in" or "out"
    sent_at: str
    subject: str
    text: str
    sender: SenderRef
    recipients: list[RecipientRef]
    attachments: list[AttachmentEntry]
    extra: dict[str, Any]


class ThreadRecord(TypedDict):
    """A conversation: its first and last message times over every shard it is in."""

    id: str
    source: str
    platform: str
    remote_id: str
    subject: str
    identity: str | None
    first_at: str
    last_at: str


class ThreadActivity(TypedDict):
    """Per thread: the owner's message times (sorted) and the last message."""

    out: list[str]
    last_at: str
    last_dir: str
    identity: str | None
    last_id: str | None


class SentRef(TypedDict):
    outbox_id: str
    sent_at: str | None
    remote_id: str | None


class ReviewState(TypedDict):
    """A deliverable's current review (``auto``: why it was approved without one)."""

    status: str
    rating: int | None
    feedback: str
    reviewed_at: str | None
    cost: float | None
    hours: float | None
    sent: list[SentRef]
    round: int
    auto: NotRequired[str]


class DeliverableRecord(TypedDict):
    """A piece of work in the review queue; ``version*`` link versions of one work."""

    id: str
    source: str
    platform: str
    remote_id: str
    message_id: str | None
    thread_id: str | None
    contractor_id: str | None
    identity: str | None
    filename: str
    content_type: str
    size: int | None
    sha256: str | None
    path: str | None
    url: str
    status: str
    flagged: bool
    note: str
    title: str
    received_at: str | None
    review_status: str  # "unreviewed", "approved" or "changes_requested"
    review: ReviewState | None
    extra: dict[str, Any]
    work: str
    replaces_remote_id: str | None
    version: NotRequired[int]
    replaces: NotRequired[str | None]
    version_of: NotRequired[str | None]


class ReviewEvent(TypedDict):
    """One review as it happened (a deliverable can be reviewed more than once)."""

    id: str
    deliverable_id: str
    status: str
    rating: int | None
    feedback: str
    reviewed_at: str | None
    received_at: str | None
    identity: str | None
    contractor_id: str | None


class ContractorRecord(TypedDict):
    """A person the owner works with; ``merged_into`` points to who they became."""

    id: str
    name: str
    status: str
    skills: list[str]
    rate: float | None
    currency: str
    notes: str
    identities: list[str]
    created_at: str | None
    status_changed_at: str | None
    merged_into: str | None


class IdentityRecord(TypedDict):
    """An address or platform account; without ``contractor_id``, a candidate."""

    key: str
    platform: str
    address: str
    name: str
    profile_url: str
    first_seen: str | None
    last_seen: str | None
    contractor_id: str | None
    ignored: NotRequired[bool]  # a candidate the owner chose to hide


class ContractRecord(TypedDict):
    """A marketplace contract, offer or order."""

    id: str
    source: str
    platform: str
    remote_id: str
    identity: str | None
    title: str
    status: str
    kind: str
    started_at: str | None
    ended_at: str | None
    rate: float | None
    budget: float | None
    spent: float | None
    currency: str
    thread_id: str | None
    extra: dict[str, Any]
