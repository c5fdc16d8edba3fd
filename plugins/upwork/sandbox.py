"""A local, faithful stand-in for the Upwork API (stdlib only), for tests and ``retainer demo``.

It speaks the real paths, auth and envelopes (see ``shared/research/marketplaces.md`` §1
and §6):

* ``GET  /ab/account-security/oauth2/authorize`` redirects (302) to
  ``redirect_uri?code=...&state=...`` at once, as if the owner clicked "Allow".
* ``POST /api/v3/oauth2/token`` (form body): ``authorization_code`` and
  ``refresh_token`` grants; ``client_id``/``client_secret`` required. Each refresh
  issues a new refresh token and cuts the old one's life to ``rotation_grace``
  (Upwork: 24 h). Errors are Upwork's: 400 ``invalid_grant`` "Refresh token is
  expired or revoked or not registered", 400 "Missing parameters: client_id".
* ``POST /graphql`` with ``Authorization: Bearer``; 401 for a missing or expired token.
  Answers ``{"data": ...}`` or, with HTTP 200, ``{"errors": [{message, locations,
  extensions: {classification}}]}``. Queries are validated and executed by graphql-core
  against the plugin's trimmed copy of Upwork's live schema (``schema.graphql``): an
  unknown field or a wrong argument type is a ``ValidationError`` with no data, as on
  Upwork; a resolver error nulls its field up to the nearest nullable parent and comes
  back *with* the rest of the data. Root fields served: ``user``, ``roomList``,
  ``roomStories``, ``roomStory``, ``contractList``, ``offer``, and the mutation
  ``createRoomStoryV2(input: {roomId, message})``, which
  validates its input (room known and joined by the signed-in user, message a
  non-blank string of at most :data:`MESSAGE_MAX` characters), posts the story as the
  owner (it comes back from ``roomStories`` and ``latestStory`` like any other, so the
  next sync sees it as outgoing) and records it in :attr:`Sandbox.posted`. Arguments
  are read from ``variables`` (``$input``), as the plugin sends them.
  Connections have ``totalCount``, ``edges`` (``{node}`` for rooms, ``{cursor,node}``
  for stories) and ``pageInfo{endCursor,hasNextPage}``; cursors are opaque; stories come newest first;
  ``message`` is null on attachment-only stories; at most 100 items a page.
* ``GET /api/v3/messages/attachments/<id>`` serves an attachment's bytes (Bearer auth).
  Its URL is in the attachment's ``metadata`` under ``downloadUrl`` (the real key is
  unknown; the plugin also looks for ``url``/``link``). Per-file faults
  (:attr:`Sandbox.file_faults`): 404/410/403/500, a login page with HTTP 200, a JSON
  error with 200, the wrong content type, a short body, a redirect to another host
  (``localhost``, which serves ``/cdn/files/<id>`` without auth and records whether
  credentials arrived in :attr:`Sandbox.cdn_hits`).
* Partial errors: :attr:`Sandbox.denied` (a root answers null plus ``PermissionDenied``)
  and :attr:`Sandbox.unresolvable_authors` (a story's non-null ``user`` fails, so its
  edge's node is null), each next to the rest of the data.

Extras for tests: an injectable clock (:class:`ManualClock`), seeded realistic data,
token expiry, fault injection (:meth:`Sandbox.inject`: HTTP status such as 429 with
``Retry-After`` or 5xx, hangs, dropped connections, HTTP-200 ``errors``, malformed JSON,
tokens revoked mid-sync), an optional server-side rate limit, and a request log
(:attr:`Sandbox.hits`).

Use::

    with start_sandbox(seed=1, threads=5, messages_per_thread=8) as sandbox:
        sandbox.authorize_source(state_dir)     # pre-issue tokens: no browser needed
        ... settings api_url=sandbox.api_url, token_url=sandbox.token_url ...

or run it in its own process: ``python -m tests.servers.upwork_sandbox --url-file F``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"  # a test fixture, not a credential
PAGE_MAX = 100
MESSAGE_MAX = 20_000  # longest story text the sandbox accepts [the real cap is unknown]
CONTRACT_IDS_MAX = 10

AUTHORIZE_PATH = "/ab/account-security/oauth2/authorize"
TOKEN_PATH = "/api/v3/oauth2/token"
GRAPHQL_PATH = "/graphql"
ATTACHMENT_PATH = "/api/v3/messages/attachments/"
CDN_PATH = "/cdn/files/"  # served as "another host" (localhost instead of 127.0.0.1)
LOGIN_PAGE = (b"<!DOCTYPE html><html><head><title>Log in - Upwork</title></head>"
              b"<body><form action=\"/ab/account-security/login\">Log in</form></body></html>")


# -- clock ---------------------------------------------------------------------------------


class ManualClock:
    """A clock that moves only when told to (``advance``); callable like ``datetime.now``."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


def real_clock() -> datetime:
    return datetime.now(UTC)


def iso(when: datetime) -> str:
    """Upwork's timestamp format: ``2025-05-01T10:00:00.000Z``."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def ms(when: datetime) -> datetime:
    """``when`` cut to milliseconds, the precision Upwork's timestamps carry."""
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def parse_iso(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- data ----------------------------------------------------------------------------------


@dataclass
class User:
    id: str
    name: str
    first: str
    last: str
    email: str
    nid: str

    @property
    def public_url(self) -> str:
        return f"https://www.upwork.com/freelancers/~01{hashlib.sha1(self.id.encode()).hexdigest()[:16]}"

    def as_generic(self) -> dict[str, Any]:
        return {
            "id": self.id, "nid": self.nid, "rid": self.id[-7:], "name": self.name,
            "firstName": self.first, "lastName": self.last, "email": self.email,
            "photoUrl": f"https://www.upwork.com/profile-portraits/{self.nid}.jpg",
            "publicUrl": self.public_url,
        }


@dataclass
class FileAttachment:
    id: str
    filename: str
    size: int
    content_type: str
    created: datetime
    declared_size: int | None = None  # what metadata says (None: the real size)

    def content(self) -> Iterator[bytes]:
        block = hashlib.sha256(self.id.encode()).digest() * 2048  # 64 KiB
        left = self.size
        while left > 0:
            chunk = block[: min(left, len(block))]
            left -= len(chunk)
            yield chunk


@dataclass
class Story:
    id: str
    room_id: str
    created: datetime
    user_id: str
    message: str | None
    attachments: list[FileAttachment] = field(default_factory=list)
    updated: datetime | None = None


@dataclass
class Room:
    id: str
    name: str
    topic: str
    created: datetime
    user_ids: list[str]
    contract_id: str | None = None
    offer_ids: list[str] = field(default_factory=list)
    stories: list[Story] = field(default_factory=list)  # oldest first

    def activity(self) -> datetime:
        return self.stories[-1].created if self.stories else self.created


@dataclass
class Submission:
    id: str
    created: datetime
    amount: float
    message: str


@dataclass
class Milestone:
    id: str
    description: str
    state: str
    sequence: int
    due: datetime
    deposit: float
    created: datetime
    submissions: list[Submission] = field(default_factory=list)


@dataclass
class ContractData:
    id: str
    title: str
    status: str
    freelancer_id: str
    created: datetime
    start: datetime
    end: datetime | None
    offer_id: str
    hourly_rate: float | None = None
    fixed_amount: float | None = None
    milestones: list[Milestone] = field(default_factory=list)
    modified: datetime | None = None


@dataclass
class Offer:
    id: str
    title: str
    state: str
    kind: str
    rate: float | None
    budget: float | None


@dataclass
class Hit:
    """One request the sandbox answered (for assertions)."""

    at: float  # time.monotonic() when it arrived
    method: str
    path: str
    operation: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    status: int = 0
    fault: str = ""


@dataclass
class Fault:
    kind: str  # "status", "hang", "drop", "graphql_error", "malformed", "revoke"
    path: str | None = GRAPHQL_PATH
    operation: str | None = None
    times: int | None = 1  # None: forever
    skip: int = 0
    status: int = 500
    retry_after: str | None = None
    seconds: float = 5.0
    message: str = ""
    classification: str = "ExecutionAborted"


_FIRST = ["Maria", "Jon", "Aisha", "Kenji", "Lucas", "Priya", "Tomás", "Olena", "Femi", "Sara",
          "Diego", "Mei", "Noah", "Zainab", "Ivan", "Chloé"]
_LAST = ["Silva", "Park", "Okafor", "Tanaka", "Meyer", "Sharma", "Ruiz", "Kovalenko", "Adeyemi",
         "Lind", "Moreno", "Chen", "Brooks", "Haddad", "Petrov", "Martin"]
_JOBS = ["Logo refresh", "Shopify theme fixes", "Landing page copy", "iOS bug bash",
         "Data pipeline in Airflow",
         "Product photos retouch", "WordPress speed-up", "Pitch deck design", "Django API endpoints",
         "Translate help center to Spanish", "Explainer video edit", "SEO audit"]
_LINES = [
    "Hi! Thanks for the invite, happy to help with this.",
    "Here is the first draft, let me know what you think.",
    "Could you share the brand guidelines?",
    "I pushed the changes to the staging branch.",
    "Quick question about the deadline: is Friday still OK?",
    "Looks great, a couple of small notes below.",
    "Uploaded the revised files.",
    "Thanks, approved. Moving on to the next milestone.",
    "I'll have the next part ready tomorrow.",
    "Can we hop on a call to go over the feedback?",
]
_FILES = [("draft-v1.pdf", "application/pdf"), ("logo-final.png", "image/png"),
          ("copy.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
          ("export.zip", "application/zip"), ("screens.fig", "application/octet-stream")]


# -- GraphQL: graphql-core against the plugin's trimmed copy of Upwork's schema ------------------

_SCHEMA: Any = None
_SCHEMA_LOCK = threading.Lock()
#: query text -> (parsed document, validation errors): parse and validate once per text
_DOCUMENTS: dict[str, tuple[Any, list[Any]]] = {}


def schema() -> Any:
    """The :class:`graphql.GraphQLSchema` built from ``plugins/upwork/schema.graphql`` (cached)."""
    global _SCHEMA
    with _SCHEMA_LOCK:
        if _SCHEMA is None:
            from graphql import build_schema

            from plugins.upwork.queries import SCHEMA_PATH

            _SCHEMA = build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))
        return _SCHEMA


def _GraphQLError(message: str, classification: str = "ValidationError") -> Exception:
    """A resolver error as Upwork reports it: ``extensions.classification`` set."""
    from graphql import GraphQLError

    return GraphQLError(message, extensions={"classification": classification})


def _cursor(prefix: str, index: int) -> str:
    return base64.b64encode(f"{prefix}:{index}".encode()).decode()


def _offset(prefix: str, after: Any) -> int:
    if after in (None, "", "0"):
        return 0
    try:
        kind, _, index = base64.b64decode(str(after), validate=True).decode().partition(":")
        if kind != prefix:
            raise ValueError
        return int(index) + 1
    except (ValueError, UnicodeDecodeError):
        raise _GraphQLError(f"Invalid pagination cursor: {after!r}") from None


def _pagination(raw: Any) -> tuple[int, Any]:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise _GraphQLError("Variable 'pagination' has an invalid value: expected an object")
    first = raw.get("first", 10)
    if not isinstance(first, int) or isinstance(first, bool) or not 1 <= first <= PAGE_MAX:
        raise _GraphQLError(
            f"Variable 'pagination' has an invalid value: 'first' must be between 1 and {PAGE_MAX}")
    return first, raw.get("after")


def _money(amount: float | None, currency: str = "USD") -> dict[str, Any] | None:
    if amount is None:
        return None
    return {"rawValue": f"{amount:.2f}", "currency": currency, "displayValue": f"${amount:,.2f}"}


# -- the sandbox -----------------------------------------------------------------------------


class Sandbox:
    """The server and its data. See the module docstring.

    :param seed: seeds the generated data (same seed, same rooms, ids and texts).
    :param threads: rooms to create, each with one contractor and one contract (every
        ``offer_every``-th room has only a pending offer instead).
    :param messages_per_thread: stories per room (oldest about ``history_days`` ago).
    :param clock: returns the current ``datetime`` (UTC); default: the real clock.
    :param rate_limit: requests per second (sliding one-second window) before a 429; None: off.
    :param latency: seconds every request waits before it is answered.
    :param rotation_grace: how long an old refresh token still works after a refresh.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        threads: int = 6,
        messages_per_thread: int = 8,
        clock: Callable[[], datetime] = real_clock,
        rate_limit: float | None = None,
        latency: float = 0.0,
        attachment_every: int = 5,
        attachment_size: int = 24_000,
        offer_every: int = 7,
        history_days: float = 30.0,
        access_ttl: float = 86400.0,
        refresh_ttl: float = 14 * 86400.0,
        rotation_grace: float = 86400.0,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the sandbox binds to the loopback interface only")
        self.clock = clock
        self.rate_limit = rate_limit
        self.latency = latency
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.rotation_grace = rotation_grace
        self.clients = {client_id: client_secret}
        self.client_id = client_id
        self.client_secret = client_secret
        self.lock = threading.RLock()
        self.hits: list[Hit] = []
        self.faults: list[Fault] = []
        self.users: dict[str, User] = {}
        self.rooms: dict[str, Room] = {}
        self.contracts: dict[str, ContractData] = {}
        self.offers: dict[str, Offer] = {}
        self.attachments: dict[str, FileAttachment] = {}
        self.posted: list[Story] = []  # stories created through createRoomStoryV2
        self.can_write = True  # False: the API key lacks the messages write scope
        #: root field -> message: that root answers null plus a PermissionDenied error,
        #: next to the data of the others (partner tiers without contract access)
        self.denied: dict[str, str] = {}
        #: story ids whose author cannot be resolved: ``RoomStory.user`` is non-null, so
        #: the story's edge comes back as ``{"node": null}`` with an error, data alongside
        self.unresolvable_authors: set[str] = set()
        #: milestone ids whose (non-null) ``submissionEvents`` fail: the milestone comes back
        #: null inside its contract, with an error, the rest of the contract alongside
        self.broken_milestones: set[str] = set()
        #: attachment id -> fault of its download: "404", "410", "403", "500", "html" (HTTP 200
        #: with a login page), "json" (200 with a JSON error), "wrong_type" (the bytes, but
        #: labelled text/html), "short" (fewer bytes than declared), "redirect" (302 to
        #: another host, which serves it without auth), "redirect_same" (302 on this host)
        self.file_faults: dict[str, str] = {}
        #: requests that reached the other ("CDN") host: (path, Authorization header or "")
        self.cdn_hits: list[tuple[str, str]] = []
        self.access_tokens: dict[str, tuple[str, datetime]] = {}
        self.refresh_tokens: dict[str, tuple[str, datetime]] = {}
        self.codes: dict[str, tuple[str, str, datetime]] = {}
        self._rng = random.Random(seed)
        self._ids = 0
        self._recent: list[float] = []
        self._stopping = threading.Event()
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.owner = self._new_user("Dana", "Whitfield", "dana@northwind.example")
        self._seed(threads, messages_per_thread, attachment_every, attachment_size, offer_every, history_days)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sandbox:
        sandbox = self

        class Handler(_Handler):
            pass

        Handler.sandbox = sandbox
        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="upwork-sandbox",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Sandbox:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start()")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + GRAPHQL_PATH

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def authorize_url(self) -> str:
        return self.base_url + AUTHORIZE_PATH

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """A ``[sources.settings]`` table pointing at this sandbox (secret as given)."""
        return {
            "client_id": self.client_id,
            "client_secret": overrides.pop("client_secret", {"env": "UPWORK_SANDBOX_SECRET"}),
            "api_url": self.api_url, "token_url": self.token_url, "auth_url": self.authorize_url,
            "redirect_uri": "http://127.0.0.1/retainer/upwork", **overrides,
        }

    # -- tokens ------------------------------------------------------------------------------

    def issue_tokens(self, client_id: str | None = None) -> dict[str, Any]:
        """Issue a token pair as the token endpoint would (for pre-authorized sources)."""
        with self.lock:
            return self._issue(client_id or self.client_id)

    def authorize_source(self, state_dir: Path, client_id: str | None = None) -> Path:
        """Pre-issue tokens and save them where the plugin reads them (``retainer demo``)."""
        from agent.files import ensure_private_dir
        from plugins.upwork.oauth import Tokens, TokenStore

        body = self.issue_tokens(client_id)
        store = TokenStore(ensure_private_dir(state_dir))
        store.save(Tokens.from_response(body, now=time.time(), client_id=client_id or self.client_id))
        return store.path

    def revoke_all(self) -> None:
        """Revoke every access and refresh token (the owner removed the app's access)."""
        with self.lock:
            self.access_tokens.clear()
            self.refresh_tokens.clear()

    def expire_access_tokens(self) -> None:
        with self.lock:
            past = self.clock() - timedelta(seconds=1)
            self.access_tokens = {t: (c, past) for t, (c, _) in self.access_tokens.items()}

    def _issue(self, client_id: str) -> dict[str, Any]:
        now = self.clock()
        access = "oauth2v2_" + secrets.token_hex(16)
        refresh = "oauth2v2_" + secrets.token_hex(16)
        self.access_tokens[access] = (client_id, now + timedelta(seconds=self.access_ttl))
        self.refresh_tokens[refresh] = (client_id, now + timedelta(seconds=self.refresh_ttl))
        return {"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
                "expires_in": str(int(self.access_ttl))}

    # -- test helpers ---------------------------------------------------------------------------

    def inject(self, kind: str, **options: Any) -> Fault:
        """Add a fault; see :class:`Fault` for the options (``times=None``: every request)."""
        fault = Fault(kind=kind, **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def graphql_hits(self, operation: str | None = None) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == GRAPHQL_PATH
                    and (operation is None or h.operation == operation)]

    def max_in_window(self, window: float = 1.0) -> int:
        """Most requests that arrived within any ``window`` seconds (half-open)."""
        with self.lock:
            times = sorted(h.at for h in self.hits)
        best = 0
        start = 0
        for end, at in enumerate(times):
            while at - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    def story_count(self) -> int:
        with self.lock:
            return sum(len(r.stories) for r in self.rooms.values())

    def add_story(
        self,
        room_id: str,
        message: str | None = "A new message.",
        *,
        user_id: str | None = None,
        attachments: list[tuple[str, int]] | None = None,
        declared_size: int | None = None,
        at: datetime | None = None,
    ) -> Story:
        """Post a story (from the room's contractor unless ``user_id``) now."""
        with self.lock:
            room = self.rooms[room_id]
            author = user_id or next(u for u in room.user_ids if u != self.owner.id)
            when = ms(at or self.clock())
            if room.stories and when <= room.stories[-1].created:
                when = room.stories[-1].created + timedelta(milliseconds=1)
            story = Story(self._id("story_"), room_id, when, author, message)
            for name, size in attachments or []:
                ctype = next((t for f, t in _FILES if f.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]),
                             "application/octet-stream")
                att = FileAttachment(self._id("att_"), name, size, ctype, when, declared_size)
                self.attachments[att.id] = att
                story.attachments.append(att)
            room.stories.append(story)
            return story

    def add_room(self, *, messages: int = 3, contractor: str | None = None) -> Room:
        with self.lock:
            return self._make_room(contractor, messages, 0, 1000, False, 1.0)

    # -- seeding -------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._ids += 1
        if prefix:
            return f"{prefix}{hashlib.sha1(f'{prefix}{self._ids}'.encode()).hexdigest()[:20]}"
        return str(1_400_000 + self._ids * 7)

    def _new_user(self, first: str, last: str, email: str) -> User:
        uid = str(1_000_000_000_000_000_000 + self._rng.randrange(10**17))
        user = User(uid, f"{first} {last[0]}.", first, last, email, f"{first.lower()}{last.lower()}")
        self.users[uid] = user
        return user

    def _seed(self, threads: int, per_thread: int, attachment_every: int, attachment_size: int,
              offer_every: int, history_days: float) -> None:
        contractors: list[str] = []
        for i in range(max(1, min(threads, 40))):
            first = _FIRST[i % len(_FIRST)]
            last = _LAST[(i * 5 + i // len(_FIRST)) % len(_LAST)]
            user = self._new_user(first, last, f"{first.lower()}.{last.lower()}{i}@mail.example")
            contractors.append(user.id)
        for i in range(threads):
            offer_only = bool(offer_every) and i % offer_every == offer_every - 1
            self._make_room(contractors[i % len(contractors)], per_thread, attachment_every,
                            attachment_size, offer_only, history_days, index=i)

    def _make_room(self, contractor: str | None, messages: int, attachment_every: int, attachment_size: int,
                   offer_only: bool, history_days: float, index: int | None = None) -> Room:
        rng = self._rng
        now = ms(self.clock())
        if contractor is None:
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            contractor = self._new_user(first, last, f"{first.lower()}{rng.randrange(999)}@mail.example").id
        index = len(self.rooms) if index is None else index
        job = f"{_JOBS[index % len(_JOBS)]} #{index + 1}"
        created = now - timedelta(days=history_days, minutes=index)
        room = Room(self._id("room_"), f"{self.users[contractor].name}, {self.owner.name}", job, created,
                    [self.owner.id, contractor])
        if offer_only:
            offer = Offer(self._id(""), job, "PENDING_VENDOR_ACCEPTANCE",
                          "MARKET_PLACE_FIXED_PRICE" if index % 2 else "MARKET_PLACE_HOURLY",
                          None if index % 2 else 35.0, 400.0 if index % 2 else None)
            self.offers[offer.id] = offer
            room.offer_ids.append(offer.id)
        else:
            room.contract_id = self._make_contract(job, contractor, created, index)
            room.offer_ids.append(self.contracts[room.contract_id].offer_id)
        span = timedelta(days=history_days * 0.95)
        for n in range(messages):
            when = ms(created + span * (n + 1) / (messages + 1) + timedelta(seconds=index % 60,
                                                                         milliseconds=n))
            author = contractor if n % 2 == 0 else self.owner.id
            text: str | None = _LINES[(index + n) % len(_LINES)]
            story = Story(self._id("story_"), room.id, when, author, text)
            every = attachment_every
            if every and author == contractor and (n // 2) % every == every - 1:
                name, ctype = _FILES[(index + n) % len(_FILES)]
                att = FileAttachment(self._id("att_"), name, attachment_size + 37 * n, ctype, when)
                self.attachments[att.id] = att
                story.attachments.append(att)
                if n % 4 == 0:
                    story.message = None  # attachment-only story
            room.stories.append(story)
        self.rooms[room.id] = room
        return room

    def _make_contract(self, job: str, contractor: str, created: datetime, index: int) -> str:
        hourly = index % 3 == 1
        contract = ContractData(self._id(""), job, "ACTIVE", contractor, created, created, None,
                                self._id(""), hourly_rate=45.0 + index % 5 * 5 if hourly else None,
                                fixed_amount=None if hourly else 300.0 + 100 * (index % 4))
        if not hourly:
            amount = (contract.fixed_amount or 0) / 2
            first = Milestone(self._id(""), "First draft", "Paid", 1, created + timedelta(days=7), amount,
                              created)
            first.submissions.append(Submission(self._id(""), created + timedelta(days=6), amount,
                                                "First draft attached in the room."))
            second = Milestone(self._id(""), "Final delivery", "Active", 2, created + timedelta(days=20),
                               amount, created)
            if index % 2 == 0:
                second.state = "Submitted"
                second.submissions.append(Submission(self._id(""), created + timedelta(days=19), amount,
                                                     "Final files are in the room."))
            contract.milestones = [first, second]
        self.contracts[contract.id] = contract
        return contract.id

    # -- resolvers --------------------------------------------------------------------------------

    def _story_json(self, story: Story) -> dict[str, Any]:
        return {
            "id": story.id, "createdDateTime": iso(story.created),
            "updatedDateTime": iso(story.updated or story.created), "message": story.message,
            "user": self._story_user(story), "organization": None,
            "attachments": [self._attachment_json(a, story) for a in story.attachments],
        }

    def _story_user(self, story: Story) -> Any:
        if story.id not in self.unresolvable_authors:
            return self.users[story.user_id].as_generic()

        def fail(_info: Any) -> None:  # RoomStory.user is non-null: the story comes back null
            raise _GraphQLError(f"Could not resolve the author of story {story.id}",
                                "DataFetchingException")
        return fail

    def _attachment_json(self, att: FileAttachment, story: Story) -> dict[str, Any]:
        size = att.size if att.declared_size is None else att.declared_size
        metadata = [{"key": "fileName", "value": att.filename},
                    {"key": "mimeType", "value": att.content_type}]
        if size >= 0:
            metadata.append({"key": "fileSize", "value": str(size)})
        metadata.append({"key": "downloadUrl", "value": f"{self.base_url}{ATTACHMENT_PATH}{att.id}"})
        return {"objectReferenceId": att.id, "objectType": "FILE", "metadata": metadata,
                "createdDateTime": iso(att.created),
                "author": {"user": self.users[story.user_id].as_generic(), "role": "MEMBER"}}

    def _room_json(self, room: Room) -> dict[str, Any]:
        return {
            "id": room.id, "roomName": room.name, "topic": room.topic, "roomType": "ONE_ON_ONE",
            "numUnread": 0, "numUsers": len(room.user_ids), "createdAtDateTime": iso(room.created),
            "contractId": room.contract_id, "offerIds": list(room.offer_ids), "favorite": False,
            "hidden": False, "muted": False, "readOnly": False,
            "roomUsers": [{"user": self.users[u].as_generic(), "role": "OWNER" if u == self.owner.id
                           else "MEMBER"} for u in room.user_ids],
            "latestStory": self._story_json(room.stories[-1]) if room.stories else None,
            "owner": self.owner.as_generic(), "creator": self.owner.as_generic(),
        }

    def _offer(self, args: dict[str, Any]) -> Any:
        offer = self.offers.get(str(args.get("id") or ""))
        return self._offer_json(offer) if offer else None

    def _room_story(self, args: dict[str, Any]) -> Any:
        room = self.rooms.get(str(args.get("roomId")))
        if room is None:
            raise _GraphQLError(f"Room {args.get('roomId')} not found", "DataFetchingException")
        story = next((s for s in room.stories if s.id == str(args.get("storyId"))), None)
        return self._story_json(story) if story else None

    def _create_story(self, variables: dict[str, Any]) -> dict[str, Any]:
        """``createRoomStoryV2(input: RoomStoryCreateInputV2!)``: the owner posts a story."""
        raw = variables.get("input")
        if not isinstance(raw, dict):
            raise _GraphQLError("Variable 'input' has an invalid value: expected type "
                                "'RoomStoryCreateInputV2!' but was null")
        unknown = sorted(set(raw) - {"roomId", "message"})
        if unknown:
            raise _GraphQLError(f"Variable 'input' has an invalid value: contains a field not in "
                                f"'RoomStoryCreateInputV2': '{unknown[0]}'")
        room_id, message = raw.get("roomId"), raw.get("message")
        if not isinstance(room_id, str) or not room_id:
            raise _GraphQLError("Variable 'input' has an invalid value: Field 'roomId' of type "
                                "'ID!' must not be null")
        if not isinstance(message, str):
            raise _GraphQLError("Variable 'input' has an invalid value: Field 'message' of type "
                                "'String' must be a string")
        if not message.strip():
            raise _GraphQLError("Message must not be blank", "DataFetchingException")
        if len(message) > MESSAGE_MAX:
            raise _GraphQLError(f"Message is longer than {MESSAGE_MAX} characters",
                                "DataFetchingException")
        room = self.rooms.get(room_id)
        if room is None:
            raise _GraphQLError(f"Room {room_id} not found", "DataFetchingException")
        if not self.can_write:
            raise _GraphQLError(f"User {self.owner.id} has no access of any team(s) for "
                                "[pub-messages:write:all] action(s)", "PermissionDenied")
        if self.owner.id not in room.user_ids:
            raise _GraphQLError(f"User {self.owner.id} has no access to room {room_id}",
                                "PermissionDenied")
        when = ms(self.clock())
        if room.stories and when <= room.stories[-1].created:
            when = room.stories[-1].created + timedelta(milliseconds=1)
        story = Story(self._id("story_"), room.id, when, self.owner.id, message)
        room.stories.append(story)
        self.posted.append(story)
        return self._story_json(story)

    def _room_list(self, variables: dict[str, Any]) -> dict[str, Any]:
        room_filter = variables.get("filter") or {}
        first, after = _pagination(variables.get("pagination"))
        rooms = list(self.rooms.values())
        since_raw = room_filter.get("activeSince_eq")
        if since_raw is not None:
            since = parse_iso(since_raw)
            if since is None:
                raise _GraphQLError(
                    f"Variable 'filter' has an invalid value: activeSince_eq {since_raw!r} "
                    "is not a date-time")
            rooms = [r for r in rooms if r.activity() >= since]
        order = variables.get("sortOrder") or "DESC"
        if order not in ("ASC", "DESC"):
            raise _GraphQLError(f"Variable 'sortOrder' has an invalid value: {order!r}")
        rooms.sort(key=lambda r: (r.activity(), r.id), reverse=order == "DESC")
        return self._connection("room", rooms, first, after, self._room_json)

    def _room_stories(self, variables: dict[str, Any]) -> dict[str, Any]:
        story_filter = variables.get("filter")
        if not isinstance(story_filter, dict) or not story_filter.get("roomId_eq"):
            raise _GraphQLError("Variable 'filter' has an invalid value: Field 'roomId_eq' of type 'ID!' "
                                "must not be null")
        room = self.rooms.get(str(story_filter["roomId_eq"]))
        if room is None:
            raise _GraphQLError(f"Room {story_filter['roomId_eq']} not found", "DataFetchingException")
        inner = story_filter.get("storyFilter") or {}
        first, after = _pagination(inner.get("pagination"))
        stories = list(reversed(room.stories))  # newest first
        bounds = inner.get("storyCreatedDateTime_bt")
        if bounds is not None:
            start, end = parse_iso(bounds.get("rangeStart")), parse_iso(bounds.get("rangeEnd"))
            if start is None or end is None:
                raise _GraphQLError("Variable 'filter' has an invalid value: storyCreatedDateTime_bt needs "
                                    "rangeStart and rangeEnd date-times")
            stories = [s for s in stories if start <= s.created <= end]
        return self._connection("story", stories, first, after, self._story_json)

    def _contract_list(self, variables: dict[str, Any]) -> dict[str, Any]:
        ids = variables.get("ids")
        if not isinstance(ids, list) or not ids:
            raise _GraphQLError("Variable 'ids' has an invalid value: a non-empty list of ids is required")
        if len(ids) > CONTRACT_IDS_MAX:
            raise _GraphQLError(f"Variable 'ids' has an invalid value: max size is {CONTRACT_IDS_MAX}")
        return {"contracts": [self._contract_json(self.contracts[str(i)]) for i in ids
                              if str(i) in self.contracts]}

    def _contract_json(self, c: ContractData) -> dict[str, Any]:
        user = self.users[c.freelancer_id]
        return {
            "id": c.id, "title": c.title, "status": c.status,
            "kind": None,  # ContractKind names special kinds only (WEEKLY_RETAINER, ...)
            "deliveryModel": "TALENT_MARKETPLACE", "createDate": iso(c.created),
            "modifyDate": iso(c.modified or c.created), "startDate": iso(c.start),
            "endDate": iso(c.end) if c.end else None, "offerId": c.offer_id,
            "freelancer": {"id": user.id, "rid": user.id[-7:], "name": user.name, "email": user.email,
                           "nid": user.nid},
            "terms": {
                "hourlyTerms": [{"id": c.id + "1", "hourlyRate": _money(c.hourly_rate),
                                 "weeklyHoursLimit": 20}]
                if c.hourly_rate is not None else [],
                "fixedPriceTerms": [{"id": c.id + "2", "fixedAmount": _money(c.fixed_amount),
                                     "milestones": [self._milestone_json(m) for m in c.milestones]}]
                if c.fixed_amount is not None else [],
            },
        }

    def _milestone_json(self, m: Milestone) -> dict[str, Any]:
        doc = self._milestone_doc(m)
        if m.id in self.broken_milestones:
            def fail(_info: Any) -> None:
                raise _GraphQLError(f"Submission history of milestone {m.id} is unavailable",
                                    "DataFetchingException")
            doc["submissionEvents"] = fail
        return doc

    @staticmethod
    def _milestone_doc(m: Milestone) -> dict[str, Any]:
        return {
            "id": m.id, "description": m.description, "instructions": "", "state": m.state,
            "sequenceId": m.sequence, "dueDateTime": iso(m.due), "createdDateTime": iso(m.created),
            "depositAmount": _money(m.deposit), "fundedAmount": _money(m.deposit),
            "paid": _money(m.deposit if m.state in ("Paid", "PaidByUpwork") else 0.0),
            "submissionCount": len(m.submissions),
            "lastSubmissionCreatedTime": iso(m.submissions[-1].created) if m.submissions else None,
            "submissionEvents": [
                {"submission": {"id": s.id, "createdDateTime": iso(s.created), "amount": _money(s.amount),
                                "sequenceId": n + 1},
                 "submissionMessage": {"createdDateTime": iso(s.created), "message": s.message},
                 "revisionMessage": None}
                for n, s in enumerate(m.submissions)
            ],
        }

    @staticmethod
    def _offer_json(offer: Offer) -> dict[str, Any]:
        return {"id": offer.id, "title": offer.title, "state": offer.state, "type": offer.kind,
                "offerTerms": {"hourlyTerms": {"rate": _money(offer.rate)} if offer.rate else None,
                               "fixedPriceTerm": {"budget": _money(offer.budget)} if offer.budget else None}}

    @staticmethod
    def _connection(prefix: str, items: list[Any], first: int, after: Any,
                    render: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        start = _offset(prefix, after)
        page = items[start: start + first]
        edges = [{"cursor": _cursor(prefix, start + i), "node": render(item)} for i, item in enumerate(page)]
        return {"totalCount": len(items), "edges": edges,
                "pageInfo": {"startCursor": edges[0]["cursor"] if edges else None,
                             "endCursor": edges[-1]["cursor"] if edges else None,
                             "hasNextPage": start + first < len(items), "hasPreviousPage": start > 0}}

    # -- request handling (called from handler threads) -------------------------------------------

    def _take_fault(self, path: str, operation: str | None) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path is not None and fault.path != path:
                    continue
                if fault.operation is not None and fault.operation != operation:
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.times is not None:
                    if fault.times <= 0:
                        continue
                    fault.times -= 1
                return fault
        return None

    def _over_rate(self, now: float) -> bool:
        if self.rate_limit is None:
            return False
        with self.lock:
            self._recent = [t for t in self._recent if now - t < 1.0]
            if len(self._recent) >= self.rate_limit:
                return True
            self._recent.append(now)
            return False

    def _bearer_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        with self.lock:
            entry = self.access_tokens.get(header[7:].strip())
            return entry is not None and entry[1] > self.clock()

    def handle_graphql(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            request = json.loads(body or b"{}")
            query = request["query"]
            variables = request.get("variables") or {}
            if not isinstance(query, str) or not isinstance(variables, dict):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return 400, {"errors": [{"message": "Invalid JSON body: expected {query, variables}",
                                     "extensions": {"classification": "InvalidSyntax"}}]}
        from graphql import ExecutionResult, execute, parse, validate
        from graphql.error import GraphQLSyntaxError

        operation = request.get("operationName")
        cached = _DOCUMENTS.get(query)
        if cached is None:
            try:
                document = parse(query)
            except GraphQLSyntaxError as exc:
                return 200, {"errors": [{**exc.formatted,
                                         "extensions": {"classification": "InvalidSyntax"}}]}
            cached = (document, [e.formatted for e in validate(schema(), document)])
            if len(_DOCUMENTS) < 256:  # the plugin sends a handful of fixed operations
                _DOCUMENTS[query] = cached
        document, problems = cached
        if problems:  # Upwork: HTTP 200, a ValidationError per problem, no data
            return 200, {"errors": [{**e, "extensions": {"classification": "ValidationError"}}
                                    for e in problems]}
        with self.lock:
            result = execute(schema(), document, root_value=self._root(),
                             variable_values=variables,
                             operation_name=operation if isinstance(operation, str) else None)
        assert isinstance(result, ExecutionResult)  # no async resolvers
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [
                {**e.formatted, "extensions": e.extensions or {"classification": "ValidationError"
                                                               if result.data is None
                                                               else "DataFetchingException"}}
                for e in result.errors
            ]
        return 200, answer

    def _root(self) -> dict[str, Any]:
        """Root resolvers: graphql-core calls them with the field's (coerced) arguments."""

        def denied(name: str) -> None:
            message = self.denied.get(name)
            if message is not None:
                raise _GraphQLError(message, "PermissionDenied")

        def field(name: str, resolve: Callable[..., Any]) -> Callable[..., Any]:
            def run(_info: Any, **args: Any) -> Any:
                denied(name)
                return resolve(args)
            return run

        return {
            "user": field("user", lambda _a: self.owner.as_generic()),
            "roomList": field("roomList", self._room_list),
            "roomStories": field("roomStories", self._room_stories),
            "roomStory": field("roomStory", self._room_story),
            "contractList": field("contractList", self._contract_list),
            "offer": field("offer", self._offer),
            "createRoomStoryV2": field("createRoomStoryV2", self._create_story),
        }

    def handle_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        missing = [k for k in ("grant_type", "client_id", "client_secret") if not form.get(k)]
        if missing:
            return 400, {"error": "invalid_request",
                         "error_description": f"Missing parameters: {', '.join(missing)}"}
        if self.clients.get(form["client_id"]) != form["client_secret"]:
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        now = self.clock()
        with self.lock:
            grant = form["grant_type"]
            if grant == "authorization_code":
                entry = self.codes.pop(form.get("code", ""), None)
                if entry is None or entry[0] != form["client_id"] or entry[2] < now:
                    return 400, {"error": "invalid_grant",
                                 "error_description": "Authorization code is invalid or expired"}
                if entry[1] != form.get("redirect_uri", ""):
                    return 400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}
                return 200, self._issue(form["client_id"])
            if grant == "refresh_token":
                token = form.get("refresh_token", "")
                refresh_entry = self.refresh_tokens.get(token)
                if refresh_entry is None or refresh_entry[0] != form["client_id"] or refresh_entry[1] <= now:
                    return 400, {"error": "invalid_grant",
                                 "error_description": "Refresh token is expired or revoked or not registered"}
                # rotation: the old refresh token only lives rotation_grace more seconds
                cut = now + timedelta(seconds=self.rotation_grace)
                self.refresh_tokens[token] = (refresh_entry[0], min(refresh_entry[1], cut))
                if self.rotation_grace <= 0:
                    del self.refresh_tokens[token]
                return 200, self._issue(form["client_id"])
            return 400, {"error": "unsupported_grant_type",
                         "error_description": f"Unsupported grant: {grant}"}

    def handle_authorize(self, query: dict[str, str]) -> tuple[int, str]:
        """Returns (status, location or error text)."""
        if query.get("response_type") != "code":
            return 400, "response_type must be code"
        if query.get("client_id") not in self.clients:
            return 400, "unknown client_id"
        redirect = query.get("redirect_uri", "")
        if not redirect:
            return 400, "redirect_uri is required"
        code = secrets.token_hex(12)
        with self.lock:
            self.codes[code] = (query["client_id"], redirect, self.clock() + timedelta(minutes=10))
        params = {"code": code}
        if "state" in query:
            params["state"] = query["state"]
        sep = "&" if "?" in redirect else "?"
        return 302, f"{redirect}{sep}{urlencode(params)}"


class _Handler(BaseHTTPRequestHandler):
    sandbox: Sandbox
    protocol_version = "HTTP/1.1"
    server_version = "upwork-sandbox/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(document).encode(), headers=headers)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        sandbox = self.sandbox
        parts = urlsplit(self.path)
        path = parts.path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        hit = Hit(time.monotonic(), self.command, path)
        operation: str | None = None
        if path == GRAPHQL_PATH and body:
            try:
                parsed = json.loads(body)
                operation = parsed.get("operationName") or _operation_name(parsed.get("query", ""))
                hit.variables = parsed.get("variables") or {}
            except (ValueError, AttributeError):
                pass
        hit.operation = operation
        with sandbox.lock:
            sandbox.hits.append(hit)
        try:
            self._answer(sandbox, hit, path, parts.query, body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _answer(self, sandbox: Sandbox, hit: Hit, path: str, query: str, body: bytes) -> None:
        if sandbox.latency:
            time.sleep(sandbox.latency)
        if sandbox._over_rate(hit.at):
            hit.status, hit.fault = 429, "rate_limit"
            self._json(429, {"message": "Too Many Requests"}, {"Retry-After": "1"})
            return
        fault = sandbox._take_fault(path, hit.operation)
        if fault is not None:
            hit.fault = fault.kind
            if fault.kind == "status":
                hit.status = fault.status
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                self._json(fault.status, {"message": fault.message or f"HTTP {fault.status}"}, headers)
                return
            if fault.kind == "hang":
                sandbox._stopping.wait(fault.seconds)
                hit.status = 0
                self.close_connection = True
                return
            if fault.kind == "drop":
                self.close_connection = True
                return
            if fault.kind == "malformed":
                hit.status = 200
                self._send(200, b'{"data": {"roomList": {"edges": [{"cursor": "Y3',
                           headers={"Connection": "close"})
                self.close_connection = True
                return
            if fault.kind == "graphql_error":
                hit.status = 200
                self._json(200, {"errors": [{"message": fault.message or "Internal server error",
                                             "locations": [{"line": 2, "column": 3}],
                                             "extensions": {"classification": fault.classification}}],
                                 "data": None})
                return
            if fault.kind == "revoke":
                sandbox.revoke_all()
        if path == GRAPHQL_PATH and self.command == "POST":
            if not sandbox._bearer_ok(self.headers.get("Authorization")):
                hit.status = 401
                self._json(401, {"error": "invalid_token",
                                 "error_description": "The access token is invalid or has expired"},
                           {"WWW-Authenticate": 'Bearer error="invalid_token"'})
                return
            status, document = sandbox.handle_graphql(body)
            hit.status = status
            self._json(status, document)
        elif path == TOKEN_PATH and self.command == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            status, document = sandbox.handle_token(form)
            hit.status = status
            self._json(status, document, {"Cache-Control": "no-store"})
        elif path == AUTHORIZE_PATH and self.command == "GET":
            status, where = sandbox.handle_authorize({k: v[0] for k, v in parse_qs(query).items()})
            hit.status = status
            if status == 302:
                self._send(302, b"", "text/html", {"Location": where})
            else:
                self._send(status, where.encode(), "text/plain")
        elif path.startswith(ATTACHMENT_PATH) and self.command == "GET":
            if not sandbox._bearer_ok(self.headers.get("Authorization")):
                hit.status = 401
                self._json(401, {"error": "invalid_token"})
                return
            self._file(sandbox, hit, path[len(ATTACHMENT_PATH):], cdn=False)
        elif path.startswith(CDN_PATH) and self.command == "GET":
            with sandbox.lock:
                sandbox.cdn_hits.append((path, self.headers.get("Authorization") or ""))
            self._file(sandbox, hit, path[len(CDN_PATH):], cdn=True)
        else:
            hit.status = 404
            self._json(404, {"message": f"no such endpoint: {self.command} {path}"})


    def _file(self, sandbox: Sandbox, hit: Hit, att_id: str, *, cdn: bool) -> None:
        """An attachment's bytes, or the fault :attr:`Sandbox.file_faults` names for it."""
        att = sandbox.attachments.get(att_id)
        if att is None:
            hit.status = 404
            self._json(404, {"message": "attachment not found"})
            return
        fault = "" if cdn else sandbox.file_faults.get(att.id, "")
        if fault in ("404", "410", "403", "500"):
            hit.status = int(fault)
            self._json(hit.status, {"message": {"404": "Not Found", "410": "Gone",
                                                "403": "Access denied", "500": "Server error"}[fault]})
            return
        if fault == "html":
            hit.status = 200
            self._send(200, LOGIN_PAGE, "text/html; charset=utf-8")
            return
        if fault == "json":
            hit.status = 200
            self._json(200, {"error": {"code": "FILE_NOT_READY", "message": "Try again later"}})
            return
        if fault in ("redirect", "redirect_same"):
            host = "localhost" if fault == "redirect" else "127.0.0.1"
            hit.status = 302
            self._send(302, b"", "text/plain",
                       {"Location": f"http://{host}:{sandbox.port}{CDN_PATH}{att.id}?sig=x1"})
            return
        size = att.size - 100 if fault == "short" else att.size
        hit.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if fault == "wrong_type" else att.content_type)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Disposition", content_disposition(att.filename))
        self.end_headers()
        left = size
        for chunk in att.content():
            if left <= 0:
                break
            self.wfile.write(chunk[:left])
            left -= len(chunk)


def _operation_name(query: Any) -> str | None:
    match = re.match(r"\s*(?:query|mutation)\s+([A-Za-z_]\w*)", query if isinstance(query, str) else "")
    return match.group(1) if match else None


def content_disposition(filename: str) -> str:
    """RFC 6266/5987 header for any file name: an ASCII fallback plus the UTF-8 name."""
    from urllib.parse import quote

    fallback = filename.encode("ascii", "replace").decode("ascii").replace('"', "_")
    fallback = "".join(ch if " " <= ch < "\x7f" else "_" for ch in fallback)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def start_sandbox(
    *, seed: int = 1, threads: int = 6, messages_per_thread: int = 8, **options: Any
) -> Sandbox:
    """Build and start a :class:`Sandbox` on a free loopback port; ``stop()`` it when done."""
    return Sandbox(seed=seed, threads=threads, messages_per_thread=messages_per_thread, **options).start()
