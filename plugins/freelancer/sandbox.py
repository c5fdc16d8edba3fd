"""A local stand-in for the Freelancer.com REST API, for tests, benchmarks and ``retainer demo``.

It speaks what ``shared/research/marketplaces.md`` (sections 2 and 6) records of the real
API: paths under ``/api/{namespace}/0.1/`` with trailing slashes, the
``Freelancer-OAuth-V1: <token>`` header (any case), the ``{status, result, request_id}``
envelope, errors as ``{status: "error", message, error_code, request_id}`` (some with
HTTP 200), ``limit``/``offset`` paging, PHP-style array parameters (``threads[]=1``),
opt-in detail flags (``user_details``, ``thread_details``, ``message_count``, ``count``),
epoch-second timestamps, messages newest first, and milestones as an object keyed by
id (the official SDK's fixture) or as a list (switch :attr:`Sandbox.milestones_shape`).

Reconstructed where the sources are silent, so the plugin must not depend on them more
than it has to: the error codes for bad tokens, where ``total_count`` appears, the
``threads/{id}/attachments/`` item fields and the attachment download address
(``/api/messages/0.1/messages/{message_id}/{filename}``, given to clients as ``url``).

Standard library only, so ``retainer demo`` can import it. It binds to 127.0.0.1.
Use it as a context manager or with :meth:`Sandbox.start` / :meth:`Sandbox.stop`::

    with start_sandbox(seed=7, threads=12) as sandbox:
        sandbox.base_url, sandbox.token, sandbox.owner_id

Faults are queued with :meth:`Sandbox.inject` (429 with Retry-After, 5xx, hangs, HTTP-200
errors, malformed JSON, an HTML page, a token revoked mid-sync); they hit POSTs too.

One write is served: ``POST /api/messages/0.1/threads/{thread_id}/messages/`` with the form
field ``message`` (form-encoded; a JSON body is refused as the real API does). It checks
the token's user is a member of the thread (404 ``THREAD_NOT_FOUND`` otherwise), the
message is not blank (400 ``MISSING_ARGUMENT``) nor longer than :data:`MESSAGE_MAX`,
posts it as that user (so a later sync sees it, bumping the thread's ``time_updated``)
and answers the new message object; :attr:`Sandbox.posted` lists the ids. Every API request is
logged in :attr:`Sandbox.requests` for assertions. ``python -m tests.servers.freelancer_sandbox``
runs one in the foreground and writes its address and token as one JSON line.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

API = "/api"
CDN_PATH = "/cdn/files/"  # served as "another host" (localhost instead of 127.0.0.1)
JSONDict = dict[str, Any]
FaultKind = Literal[
    "429", "500", "502", "503", "hang", "error200", "auth200", "malformed", "html", "revoke",
    "refused",
]
MilestoneShape = Literal["map", "list"]
SITE = "https://www.freelancer.com"
MESSAGE_MAX = 10_000  # longest message the sandbox accepts [the real cap is unknown]


class Clock:
    """The sandbox's idea of now (epoch seconds): real time, shifted or frozen.

    ``Clock()`` follows the wall clock; ``Clock(start=..., frozen=True)`` stays put until
    :meth:`advance` or :meth:`set` moves it, so tests can place events in one second.
    """

    def __init__(self, start: float | None = None, *, frozen: bool = False) -> None:
        self._offset = 0.0 if start is None else start - time.time()
        self._frozen_at: float | None = (time.time() + self._offset) if frozen else None
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds

    def set(self, when: float) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at = when
            else:
                self._offset = when - time.time()


@dataclass
class Fault:
    """One queued failure.

    :param kind: ``"429"`` (with ``Retry-After``), ``"500"``/``"502"``/``"503"``,
        ``"hang"`` (no answer for ``hang_seconds``), ``"error200"`` (an error envelope with
        HTTP 200), ``"auth200"`` (a token error with HTTP 200), ``"malformed"`` (truncated
        JSON), ``"html"`` (a login page with HTTP 200), ``"revoke"`` (the token is revoked,
        then the request is refused like every later one), ``"refused"`` (HTTP 400
        ``NOT_ALLOWED``: this token may not read that listing, the rest works).
    :param path: only requests whose path contains this (``""``: any API request).
    :param times: how many matching requests it hits (``-1``: every one).
    :param skip: let this many matching requests through first.
    """

    kind: FaultKind
    path: str = ""
    times: int = 1
    skip: int = 0
    retry_after: float = 1.0
    hang_seconds: float = 30.0


@dataclass(frozen=True)
class LoggedRequest:
    """One request the sandbox answered (API and downloads alike)."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    at: float  # time.monotonic() when it arrived
    fault: str = ""
    authorized: bool = False


@dataclass
class _Token:
    user_id: int
    expires_at: float | None
    revoked: bool = False


@dataclass
class _File:
    filename: str
    data: bytes
    content_type: str
    message_id: int
    thread_id: int
    created: int


class SandboxError(Exception):
    """An error answer: HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


_FIRST = ["Maria", "Tomasz", "Aisha", "Kenji", "Lucia", "Olu", "Priya", "Mateo", "Hannah",
          "Dmitri", "Sofia", "Rahul", "Chen", "Amara", "Jonas", "Elif"]
_LAST = ["Lopez", "Nowak", "Rahman", "Sato", "Ferreira", "Adeyemi", "Nair", "Garcia",
         "Becker", "Volkov", "Rossi", "Mehta", "Wei", "Okafor", "Berg", "Yilmaz"]
_WORK = [("Logo refresh for a bakery", "logo"), ("Product photo retouching", "photo"),
         ("WordPress landing page", "web"), ("Blog articles on tea", "writing"),
         ("Shopify theme fixes", "web"), ("Explainer video script", "writing"),
         ("Instagram post templates", "design"), ("Spanish translation of FAQ", "translation"),
         ("Podcast audio cleanup", "audio"), ("Data entry: product catalogue", "data")]
_FREELANCER_LINES = [
    "Hi! Thanks for the invite. I have done similar work before, see my portfolio.",
    "Quick question: do you have brand colours or a style guide I should follow?",
    "Here is the first draft. Let me know what you think.",
    "I have made the changes you asked for. The new version is attached.",
    "I will have the next part ready by Thursday.",
    "Could you confirm the final sizes before I export?",
    "Milestone 1 is done, I have requested the release. Thank you!",
    "No problem, I can do a revision round tomorrow morning.",
]
_OWNER_LINES = [
    "Hi, thanks for your bid. Could you start this week?",
    "Looks good. Please make the heading a bit larger.",
    "Great work, approved. Next: the mobile version.",
    "The colours are in the brief I sent; use the darker green.",
    "Thanks! I will review it tonight.",
    "Please send the source files as well.",
]
_FILES = [("draft-v1.pdf", "application/pdf"), ("logo-final.png", "image/png"),
          ("article-1.docx",
           "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
          ("mockup.jpg", "image/jpeg"), ("catalogue.csv", "text/csv"),
          ("audio-clean.mp3", "audio/mpeg")]


def _flag(query: dict[str, list[str]], name: str) -> bool:
    values = query.get(name) or []
    return bool(values) and values[-1].lower() in ("true", "1", "yes")


def _ints(query: dict[str, list[str]], name: str) -> list[int] | None:
    """A PHP-style array parameter (``name[]=1&name[]=2``) as ints, or None if absent."""
    values = query.get(f"{name}[]")
    if values is None:
        values = query.get(name)  # the official SDKs send ``messages=1`` without brackets
    if values is None:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise SandboxError(400, "ExceptionCodes.INVALID_ARGUMENT",
                           f"{name}[] must hold integers") from None


def _int(query: dict[str, list[str]], name: str, default: int | None = None) -> int | None:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError:
        raise SandboxError(400, "ExceptionCodes.INVALID_ARGUMENT",
                           f"{name} must be an integer") from None


class Sandbox:
    """A seeded, fault-injectable Freelancer.com API on 127.0.0.1.

    Mutate the data only through the methods here (they take the lock and keep
    ``time_updated`` in step). Attribute switches take effect at the next request.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        threads: int = 8,
        messages_per_thread: int = 6,
        attachment_every: int = 3,
        big_attachment_bytes: int = 0,
        clock: Clock | None = None,
        milestones_shape: MilestoneShape = "map",
        max_limit: int = 100,
        rate_limit: float | None = None,
        burst: int = 1,
        latency: float = 0.0,
        strict_slashes: bool = True,
        token_lifetime: float | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.milestones_shape: MilestoneShape = milestones_shape
        self.max_limit = max_limit
        self.rate_limit = rate_limit
        self.burst = burst
        self.latency = latency
        self.strict_slashes = strict_slashes
        self.thread_id_top_level = True
        self.requests: list[LoggedRequest] = []
        self.users: dict[int, JSONDict] = {}
        self.threads: dict[int, JSONDict] = {}
        self.messages: dict[int, JSONDict] = {}
        self.files: dict[tuple[int, str], _File] = {}
        self.projects: dict[int, JSONDict] = {}
        self.bids: dict[int, JSONDict] = {}
        self.milestones: dict[int, JSONDict] = {}
        self.posted: list[int] = []  # ids of messages created through the POST endpoint
        #: the key a message names its sender under: FAND's ``from_user``, or
        #: ``from_user_id`` as FSDK's post-message fixture has it
        self.sender_key = "from_user"
        #: (message id, filename) -> download fault: "404", "410", "403", "500", "html"
        #: (a login page with HTTP 200), "json" (an error envelope with 200), "wrong_type"
        #: (the bytes labelled text/html), "short" (fewer bytes than listed), "redirect"
        #: (302 to another host, ``localhost``, serving it without auth)
        self.file_faults: dict[tuple[int, str], str] = {}
        #: downloads that reached the other ("CDN") host: (path, token header or "")
        self.cdn_hits: list[tuple[str, str]] = []
        self._tokens: dict[str, _Token] = {}
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._bucket = float(burst)
        self._bucket_at = time.monotonic()
        self._next_id = {"message": 600_000_001, "thread": 41_000_001, "project": 39_000_001,
                         "bid": 270_000_001, "milestone": 1_500_001, "user": 30_010_001,
                         "key": 501}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.owner_id = self._add_user("dana.whitfield", "Dana Whitfield", "employer")
        self.token = self.issue_token(self.owner_id, expires_in=token_lifetime)
        self._seed(random.Random(seed), threads, messages_per_thread, attachment_every,
                   big_attachment_bytes)

    # -- life cycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the plugin's ``base_url`` setting."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Sandbox:
        if self._server is not None:
            return self
        self._stopping.clear()
        handler = type("Handler", (_Handler,), {"sandbox": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="freelancer-sandbox",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- tokens, faults, log ---------------------------------------------------------------

    def issue_token(self, user_id: int | None = None, *, expires_in: float | None = None) -> str:
        """A new access token for ``user_id`` (the owner by default)."""
        token = secrets.token_urlsafe(24)
        expires = None if expires_in is None else self.clock.now() + expires_in
        with self._lock:
            self._tokens[token] = _Token(user_id or self.owner_id, expires)
        return token

    def revoke_token(self, token: str | None = None) -> None:
        with self._lock:
            self._tokens[token or self.token].revoked = True

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def api_requests(self, path: str = "") -> list[LoggedRequest]:
        """Logged requests (downloads included) whose path contains ``path``."""
        with self._lock:
            return [r for r in self.requests if path in r.path]

    # -- data ------------------------------------------------------------------------------

    def _new_id(self, kind: str) -> int:
        value = self._next_id[kind]
        self._next_id[kind] += 1
        return value

    def _add_user(self, username: str, name: str, role: str) -> int:
        uid = self._new_id("user")
        self.users[uid] = {
            "id": uid, "username": username, "display_name": name, "public_name": name,
            "role": role, "registration_date": 1_500_000_000 + uid % 10_000_000,
            "location": {"country": {"name": "Unknown"}}, "avatar": None,
        }
        return uid

    def add_freelancer(self, name: str, username: str | None = None) -> int:
        with self._lock:
            return self._add_user(username or name.lower().replace(" ", "."), name,
                                  "freelancer")

    def add_project(self, title: str, *, kind: str = "fixed", budget: float = 250.0,
                    status: str = "active", frontend: str = "work_in_progress",
                    when: int | None = None) -> int:
        with self._lock:
            pid = self._new_id("project")
            at = int(self.clock.now()) if when is None else when
            self.projects[pid] = {
                "id": pid, "owner_id": self.owner_id, "title": title, "status": status,
                "seo_url": "project-" + str(pid), "currency": {"id": 1, "code": "USD",
                                                              "sign": "$"},
                "description": f"{title}. Details in the attached brief.", "type": kind,
                "budget": {"minimum": budget * 0.5, "maximum": budget},
                "bid_stats": {"bid_count": 0, "bid_avg": 0.0}, "submitdate": at,
                "time_submitted": at, "time_updated": at, "frontend_project_status": frontend,
                "hireme": False,
            }
            return pid

    def add_bid(self, project_id: int, bidder_id: int, amount: float, *,
                awarded: bool = False, when: int | None = None) -> int:
        with self._lock:
            bid_id = self._new_id("bid")
            at = int(self.clock.now()) if when is None else when
            self.bids[bid_id] = {
                "id": bid_id, "project_id": project_id, "bidder_id": bidder_id,
                "project_owner_id": self.owner_id, "amount": amount, "period": 7,
                "description": "I can deliver this within a week.",
                "award_status": "awarded" if awarded else None,
                "frontend_bid_status": "in_progress" if awarded else "active",
                "time_submitted": at, "time_awarded": at + 3600 if awarded else None,
                "retracted": False, "paid_amount": 0.0,
            }
            stats = self.projects[project_id]["bid_stats"]
            stats["bid_count"] += 1
            stats["bid_avg"] = round(
                sum(b["amount"] for b in self.bids.values() if b["project_id"] == project_id)
                / stats["bid_count"], 2)
            return bid_id

    def add_milestone(self, project_id: int, bidder_id: int, amount: float, description: str,
                      status: str = "pending", when: int | None = None) -> int:
        with self._lock:
            mid = self._new_id("milestone")
            at = int(self.clock.now()) if when is None else when
            self.milestones[mid] = {
                "id": mid, "transaction_id": mid, "project_id": project_id,
                "bidder_id": bidder_id, "project_owner_id": self.owner_id, "amount": amount,
                # FAND's Milestone has the text under ``other_reason`` (no ``description``)
                "other_reason": description, "status": status, "reason": "full_payment",
                "time_created": at, "time_updated": at,
                "currency": {"id": 1, "code": "USD", "sign": "$"},
            }
            return mid

    def set_milestone_status(self, milestone_id: int, status: str) -> None:
        with self._lock:
            milestone = self.milestones[milestone_id]
            milestone["status"] = status
            milestone["time_updated"] = int(self.clock.now())

    def add_thread(self, members: Iterable[int], *, project_id: int | None = None,
                   when: int | None = None) -> int:
        with self._lock:
            tid = self._new_id("thread")
            at = int(self.clock.now()) if when is None else when
            self.threads[tid] = {
                "id": tid, "folder": "inbox", "time_updated": at, "is_muted": False,
                "is_read": True,
                "thread": {
                    "id": tid, "thread_type": "primary" if project_id else "private_chat",
                    "context": ({"type": "project", "id": project_id} if project_id
                                else {"type": "none"}),
                    "members": sorted(set(members)), "owner": self.owner_id,
                    "time_created": at, "write_privacy": "members",
                    "read_privacy": "members", "owner_read_privacy": "members",
                },
            }
            return tid

    def archive_thread(self, thread_id: int) -> None:
        """Move a thread to the ``archived`` folder (the default listing leaves it out)."""
        with self._lock:
            self.threads[thread_id]["folder"] = "archived"

    def add_message(self, thread_id: int, from_user: int, text: str, *,
                    files: Iterable[tuple[str, bytes, str]] = (),
                    when: int | None = None) -> int:
        """Post a message (with files as ``(name, bytes, content type)``); bumps the thread."""
        with self._lock:
            mid = self._new_id("message")
            at = int(self.clock.now()) if when is None else when
            attachments = []
            for filename, data, content_type in files:
                attachments.append({"key": self._new_id("key"), "filename": filename,
                                    "message_id": mid})
                self.files[(mid, filename)] = _File(filename, data, content_type, mid,
                                                    thread_id, at)
            self.messages[mid] = {
                "id": mid, "thread_id": thread_id, "from_user": from_user, "message": text,
                "time_created": at, "message_source": "default_msg",
                "attachments": attachments, "client_message_id": None,
            }
            thread = self.threads[thread_id]
            thread["time_updated"] = max(thread["time_updated"], at)
            if from_user != self.owner_id:
                thread["is_read"] = False
            return mid

    def edit_message(self, message_id: int, text: str) -> None:
        with self._lock:
            message = self.messages[message_id]
            at = int(self.clock.now())
            message["message"] = text
            message["time_updated"] = at
            thread = self.threads[message["thread_id"]]
            thread["time_updated"] = max(thread["time_updated"], at)

    def _seed(self, rng: random.Random, n_threads: int, per_thread: int,
              attachment_every: int, big_attachment_bytes: int) -> None:
        now = int(self.clock.now())
        start = now - 60 * 86_400
        pool: list[int] = []
        for i in range(max(4, min(len(_FIRST), n_threads))):
            name = f"{_FIRST[i % len(_FIRST)]} {_LAST[(i * 7) % len(_LAST)]}"
            pool.append(self.add_freelancer(name, f"{name.split()[0].lower()}{100 + i}"))
        span = max(1, now - 3600 - start)
        made = 0
        project_index = 0
        while made < n_threads:
            title, _skill = _WORK[project_index % len(_WORK)]
            if project_index >= len(_WORK):
                title = f"{title} #{project_index // len(_WORK) + 1}"
            p_at = start + rng.randrange(0, span // 2)
            hourly = project_index % 4 == 3
            awarded_project = project_index % 5 != 4
            pid = self.add_project(title, kind="hourly" if hourly else "fixed",
                                   budget=float(rng.choice([150, 250, 400, 800, 1200])),
                                   frontend="work_in_progress" if awarded_project else "open",
                                   when=p_at)
            bidders = rng.sample(pool, k=min(len(pool), 3))
            for rank, bidder in enumerate(bidders):
                if made >= n_threads:
                    break
                awarded = awarded_project and rank == 0
                amount = float(rng.choice([15, 25, 35])) if hourly else float(
                    rng.choice([120, 200, 350, 600]))
                self.add_bid(pid, bidder, amount, awarded=awarded, when=p_at + 600 + rank)
                if awarded and not hourly:
                    statuses = ["cleared", "requested_release", "pending"]
                    for m in range(1 + project_index % 3):
                        self.add_milestone(pid, bidder, round(amount / 3, 2),
                                           f"Milestone {m + 1}: {title}", statuses[m],
                                           when=p_at + 7200 + m * 86_400)
                tid = self.add_thread([self.owner_id, bidder], project_id=pid,
                                      when=p_at + 900 + rank)
                at = p_at + 1000 + rank
                for k in range(per_thread):
                    at += rng.randrange(60, 4 * 3600)
                    at = min(at, now - 60)
                    sender = bidder if k % 2 == 0 else self.owner_id
                    lines = _FREELANCER_LINES if sender == bidder else _OWNER_LINES
                    files: list[tuple[str, bytes, str]] = []
                    if (sender == bidder and k == 2 and attachment_every
                            and made % attachment_every == 0):
                        name, ctype = _FILES[made % len(_FILES)]
                        size = rng.randrange(2_000, 40_000)
                        files.append((name, rng.randbytes(size), ctype))
                    self.add_message(tid, sender, lines[(k + made) % len(lines)],
                                     files=files, when=at)
                made += 1
            project_index += 1
        if big_attachment_bytes and self.threads:
            tid = min(self.threads)
            bidder = next(m for m in self.threads[tid]["thread"]["members"]
                          if m != self.owner_id)
            self.add_message(tid, bidder, "The full-resolution export is attached.",
                             files=[("export-full.zip", b"\0" * big_attachment_bytes,
                                     "application/zip")], when=now - 30)

    # -- request handling ------------------------------------------------------------------

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path and fault.path not in path:
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.times == 0:
                    continue
                if fault.times > 0:
                    fault.times -= 1
                return fault
            self._faults = [f for f in self._faults if f.times != 0]
            return None

    def _over_rate(self) -> float | None:
        """Seconds to wait when the token bucket is empty, else None (a request is taken)."""
        if self.rate_limit is None:
            return None
        with self._lock:
            now = time.monotonic()
            self._bucket = min(float(self.burst),
                               self._bucket + (now - self._bucket_at) * self.rate_limit)
            self._bucket_at = now
            if self._bucket >= 1.0:
                self._bucket -= 1.0
                return None
            return (1.0 - self._bucket) / self.rate_limit

    def _authorize(self, token: str | None) -> int:
        if not token:
            raise SandboxError(401, "AuthExceptionCodes.NOT_AUTHENTICATED",
                               "You must be logged in to perform this request")
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                raise SandboxError(401, "AuthExceptionCodes.INVALID_ACCESS_TOKEN",
                                   "The access token is invalid")
            if entry.revoked:
                raise SandboxError(401, "AuthExceptionCodes.ACCESS_TOKEN_REVOKED",
                                   "The access token has been revoked")
            if entry.expires_at is not None and self.clock.now() >= entry.expires_at:
                raise SandboxError(401, "AuthExceptionCodes.ACCESS_TOKEN_EXPIRED",
                                   "The access token has expired")
            return entry.user_id

    def _log(self, method: str, path: str, query: dict[str, list[str]], status: int,
             at: float, fault: str, authorized: bool) -> None:
        with self._lock:
            self.requests.append(LoggedRequest(method, path, query, status, at, fault,
                                               authorized))

    def _page(self, items: list[Any], query: dict[str, list[str]],
              default: int = 20) -> list[Any]:
        limit = _int(query, "limit", default) or default
        offset = _int(query, "offset", 0) or 0
        if limit < 0 or offset < 0:
            raise SandboxError(400, "ExceptionCodes.INVALID_ARGUMENT",
                               "limit and offset must not be negative")
        limit = min(limit, self.max_limit)
        return items[offset:offset + limit]

    def _users(self, ids: Iterable[int]) -> JSONDict:
        return {str(u): dict(self.users[u]) for u in sorted(set(ids)) if u in self.users}

    def route(self, path: str, query: dict[str, list[str]], user_id: int) -> JSONDict:
        """Answer one authorized GET under ``/api``; raise :class:`SandboxError` for errors."""
        parts = [p for p in path[len(API):].split("/") if p]
        if len(parts) < 3 or parts[1] != "0.1":
            raise SandboxError(404, "ExceptionCodes.NOT_FOUND", f"No route for {path}")
        namespace, rest = parts[0], parts[2:]
        with self._lock:
            if namespace == "users":
                return self._route_users(rest, query, user_id)
            if namespace == "messages":
                return self._route_messages(rest, query, user_id)
            if namespace == "projects":
                return self._route_projects(rest, query, user_id)
        raise SandboxError(404, "ExceptionCodes.NOT_FOUND", f"No route for {path}")

    def _route_users(self, rest: list[str], query: dict[str, list[str]],
                     user_id: int) -> JSONDict:
        if rest == ["self"]:
            return dict(self.users[user_id])
        if rest == ["users"]:
            wanted = _ints(query, "users") or []
            return {"users": self._users(wanted)}
        raise SandboxError(404, "ExceptionCodes.NOT_FOUND", "No such users endpoint")

    def _visible_threads(self, user_id: int) -> list[JSONDict]:
        return [t for t in self.threads.values() if user_id in t["thread"]["members"]]

    def _thread_item(self, thread: JSONDict, query: dict[str, list[str]]) -> JSONDict:
        item: JSONDict = json.loads(json.dumps(thread))
        if not self.thread_id_top_level:
            item.pop("id", None)
        if _flag(query, "message_count"):
            item["message_count"] = sum(1 for m in self.messages.values()
                                        if m["thread_id"] == thread["id"])
        if _flag(query, "last_message"):
            mine = [m for m in self.messages.values() if m["thread_id"] == thread["id"]]
            item["last_message"] = max(mine, key=lambda m: (m["time_created"], m["id"]),
                                       default=None)
        return item

    def _route_messages(self, rest: list[str], query: dict[str, list[str]],
                        user_id: int) -> JSONDict:
        if rest == ["threads"]:
            threads = self._visible_threads(user_id)
            wanted = _ints(query, "threads")
            if wanted is not None:
                threads = [t for t in threads if t["id"] in wanted]
            folders = query.get("folders[]")
            if folders is not None:
                threads = [t for t in threads if t.get("folder", "inbox") in folders]
            elif wanted is None:  # like the web inbox: archived threads only on request
                threads = [t for t in threads if t.get("folder") != "archived"]
            with_members = _ints(query, "members")
            if with_members is not None:
                threads = [t for t in threads
                           if set(with_members) <= set(t["thread"]["members"])]
            contexts = _ints(query, "contexts")
            types = query.get("context_type")
            context_type = types[-1] if types else None
            if contexts is not None or context_type is not None:
                threads = [t for t in threads
                           if (context_type is None
                               or t["thread"]["context"].get("type") == context_type)
                           and (contexts is None or t["thread"]["context"].get("id") in contexts)]
            lo, hi = _int(query, "from_updated_time"), _int(query, "to_updated_time")
            threads = [t for t in threads if (lo is None or t["time_updated"] >= lo)
                       and (hi is None or t["time_updated"] <= hi)]
            threads.sort(key=lambda t: (t["time_updated"], t["id"]), reverse=True)
            page = self._page(threads, query)
            result: JSONDict = {
                "threads": [self._thread_item(t, query) for t in page],
                "users": (self._users(m for t in page for m in t["thread"]["members"])
                          if _flag(query, "user_details") else None),
            }
            if _flag(query, "count"):
                result["total_count"] = len(threads)
            if _flag(query, "unread_thread_count"):
                result["unread_thread_count"] = sum(1 for t in threads if not t["is_read"])
            return result
        if len(rest) == 3 and rest[0] == "threads" and rest[2] == "attachments":
            tid = int(rest[1]) if rest[1].isdigit() else -1
            thread = self.threads.get(tid)
            if thread is None or user_id not in thread["thread"]["members"]:
                raise SandboxError(404, "MessageExceptionCodes.THREAD_NOT_FOUND",
                                   f"Thread {rest[1]} does not exist")
            files = sorted((f for f in self.files.values() if f.thread_id == tid),
                           key=lambda f: (f.created, f.message_id), reverse=True)
            return {"attachments": [{
                "filename": f.filename, "message_id": f.message_id, "thread_id": tid,
                "size": len(f.data), "content_type": f.content_type,
                "time_created": f.created,
                "url": (f"{self.base_url}/api/messages/0.1/messages/{f.message_id}/"
                        f"{quote_name(f.filename)}"),
            } for f in files]}
        if rest == ["messages"]:
            in_threads = _ints(query, "threads")
            ids = _ints(query, "messages")
            if in_threads is None and ids is None:
                raise SandboxError(400, "ExceptionCodes.MISSING_ARGUMENT",
                                   "threads[] or messages[] is required")
            visible = {t["id"] for t in self._visible_threads(user_id)}
            messages = [m for m in self.messages.values() if m["thread_id"] in visible
                        and (in_threads is None or m["thread_id"] in in_threads)
                        and (ids is None or m["id"] in ids)]
            lo, hi = _int(query, "from_updated_time"), _int(query, "to_updated_time")

            def updated(m: JSONDict) -> int:
                return max(int(m["time_created"]), int(m.get("time_updated") or 0))

            messages = [m for m in messages if (lo is None or updated(m) >= lo)
                        and (hi is None or updated(m) <= hi)]
            messages.sort(key=lambda m: (m["time_created"], m["id"]), reverse=True)
            page = self._page(messages, query)
            shown = json.loads(json.dumps(page))
            if self.sender_key != "from_user":
                for message in shown:
                    message[self.sender_key] = message.pop("from_user")
            result = {"messages": shown,
                      "unfiltered_count": len(messages),
                      "users": None, "threads": None}
            if _flag(query, "user_details"):
                members = {u for m in page
                           for u in self.threads[m["thread_id"]]["thread"]["members"]}
                result["users"] = self._users(members | {m["from_user"] for m in page})
            if _flag(query, "thread_details"):
                result["threads"] = {str(m["thread_id"]): json.loads(json.dumps(
                    self.threads[m["thread_id"]]["thread"])) for m in page}
            return result
        raise SandboxError(404, "ExceptionCodes.NOT_FOUND", "No such messages endpoint")

    def _route_projects(self, rest: list[str], query: dict[str, list[str]],
                        user_id: int) -> JSONDict:
        if rest == ["projects"]:
            projects = list(self.projects.values())
            wanted, owners = _ints(query, "projects"), _ints(query, "owners")
            if wanted is not None:
                projects = [p for p in projects if p["id"] in wanted]
            if owners is not None:
                projects = [p for p in projects if p["owner_id"] in owners]
            projects.sort(key=lambda p: p["id"], reverse=True)
            page = self._page(projects, query, default=10)
            return {"projects": json.loads(json.dumps(page)), "total_count": len(projects),
                    "users": (self._users(p["owner_id"] for p in page)
                              if _flag(query, "user_details") else None)}
        if len(rest) == 2 and rest[0] == "projects":
            project = self.projects.get(int(rest[1]) if rest[1].isdigit() else -1)
            if project is None:
                raise SandboxError(404, "ProjectExceptionCodes.PROJECT_NOT_FOUND",
                                   f"Project {rest[1]} does not exist")
            return json.loads(json.dumps(project))  # type: ignore[no-any-return]
        if rest == ["bids"]:
            bids = list(self.bids.values())
            for name, key in (("bids", "id"), ("projects", "project_id"),
                              ("bidders", "bidder_id")):
                values = _ints(query, name)
                if values is not None:
                    bids = [b for b in bids if b[key] in values]
            bids = [b for b in bids if b["project_owner_id"] == user_id
                    or b["bidder_id"] == user_id]
            bids.sort(key=lambda b: b["id"])
            page = self._page(bids, query, default=10)
            return {"bids": json.loads(json.dumps(page)),
                    "users": (self._users(b["bidder_id"] for b in page)
                              if _flag(query, "user_details") else None)}
        if rest == ["milestones"]:
            milestones = list(self.milestones.values())
            for name, key in (("milestones", "id"), ("projects", "project_id"),
                              ("bidders", "bidder_id")):
                values = _ints(query, name)
                if values is not None:
                    milestones = [m for m in milestones if m[key] in values]
            milestones = [m for m in milestones if user_id in (m["project_owner_id"],
                                                               m["bidder_id"])]
            milestones.sort(key=lambda m: m["id"])
            page = json.loads(json.dumps(self._page(milestones, query, default=10)))
            users = (self._users(m["bidder_id"] for m in page)
                     if _flag(query, "user_details") else None)
            if self.milestones_shape == "list":
                return {"milestones": page, "users": users}
            # the official SDK fixture: an object keyed by id, the items without "id"
            return {"milestones": {str(m.pop("id")): m for m in page}, "users": users}
        raise SandboxError(404, "ExceptionCodes.NOT_FOUND", "No such projects endpoint")

    def post(self, path: str, form: dict[str, list[str]], user_id: int) -> JSONDict:
        """Answer one authorized POST under ``/api`` (only a thread's messages are writable)."""
        parts = [p for p in path[len(API):].split("/") if p]
        # messages / 0.1 / threads / <thread id> / messages
        if (len(parts) != 5 or parts[:3] != ["messages", "0.1", "threads"]
                or parts[4] != "messages"):
            raise SandboxError(405, "ExceptionCodes.METHOD_NOT_ALLOWED",
                               f"The sandbox cannot POST to {path}")
        with self._lock:
            thread = self.threads.get(int(parts[3]) if parts[3].isdigit() else -1)
            if thread is None or user_id not in thread["thread"]["members"]:
                raise SandboxError(404, "MessageExceptionCodes.THREAD_NOT_FOUND",
                                   f"Thread {parts[3]} does not exist")
            if "files[]" in form or "attachments[]" in form:
                raise SandboxError(400, "ExceptionCodes.INVALID_ARGUMENT",
                                   "The sandbox does not accept files")
            texts = form.get("message") or []
            if not texts or not texts[-1].strip():
                raise SandboxError(400, "ExceptionCodes.MISSING_ARGUMENT",
                                   "message is required")
            if len(texts[-1]) > MESSAGE_MAX:
                raise SandboxError(400, "MessageExceptionCodes.MESSAGE_TOO_LONG",
                                   f"message is longer than {MESSAGE_MAX} characters")
            mid = self.add_message(thread["id"], user_id, texts[-1])
            self.posted.append(mid)
            return json.loads(json.dumps(self.messages[mid]))  # type: ignore[no-any-return]

    def download(self, path: str) -> _File | None:
        parts = [p for p in path.split("/") if p]
        # api / messages / 0.1 / messages / <message id> / <filename>
        if len(parts) != 6 or parts[:4] != ["api", "messages", "0.1", "messages"]:
            return None
        if not parts[4].isdigit():
            return None
        with self._lock:
            return self.files.get((int(parts[4]), unquote(parts[5])))


class _Handler(BaseHTTPRequestHandler):
    sandbox: Sandbox
    protocol_version = "HTTP/1.1"
    server_version = "FreelancerSandbox/0.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def _envelope_error(self, status: int, code: str, message: str,
                        headers: dict[str, str] | None = None) -> None:
        body = {"status": "error", "message": message, "error_code": code,
                "request_id": secrets.token_hex(16)}
        self._send(status, json.dumps(body).encode(), headers=headers)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        form: dict[str, list[str]] | None = None
        if ctype == "application/x-www-form-urlencoded":
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        self._serve(form)

    def do_PUT(self) -> None:
        self._reject_write()

    def _reject_write(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._envelope_error(405, "ExceptionCodes.METHOD_NOT_ALLOWED",
                             "The sandbox is read-only")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._serve(None)

    def _serve(self, form: dict[str, list[str]] | None) -> None:
        """Answer a GET, or a POST with its parsed form (None: not a form body)."""
        sandbox = self.sandbox
        self._arrived = time.monotonic()
        parts = urlsplit(self.path)
        self._path = path = parts.path
        self._query = query = parse_qs(parts.query, keep_blank_values=True)
        self._fault_name, self._authorized, self._logged = "", False, False
        if sandbox.latency:
            sandbox._stopping.wait(sandbox.latency)
        try:
            wait = sandbox._over_rate()
            if wait is not None:
                self._fault_name = "rate"
                self._envelope_error(429, "ExceptionCodes.RATE_LIMITED",
                                     "Too many requests; slow down",
                                     {"Retry-After": str(max(1, math.ceil(wait)))})
                return
            if path.startswith(CDN_PATH):  # "another host": no token needed, none wanted
                with sandbox._lock:
                    sandbox.cdn_hits.append((path, self.headers.get("Freelancer-OAuth-V1") or ""))
                file = sandbox.download(API + "/messages/0.1/messages/" + path[len(CDN_PATH):])
                if file is None:
                    raise SandboxError(404, "ExceptionCodes.NOT_FOUND", "No such file")
                self._send(200, file.data, file.content_type,
                           {"Content-Disposition": content_disposition(file.filename)})
                return
            fault = sandbox._next_fault(path)
            if fault is not None:
                self._fault_name = fault.kind
                if self._fault(fault):
                    return
            user_id = sandbox._authorize(self.headers.get("Freelancer-OAuth-V1"))
            self._authorized = True
            if self.command == "POST":
                if sandbox.strict_slashes and not path.endswith("/"):
                    raise SandboxError(404, "ExceptionCodes.NOT_FOUND",
                                       f"No route for {path} (the API wants a trailing slash)")
                if form is None:  # a JSON body: the real API reads form fields only
                    raise SandboxError(400, "ExceptionCodes.MISSING_ARGUMENT",
                                       "message is required (send a form, not JSON)")
                posted = sandbox.post(path, form, user_id)
                self._send(200, json.dumps({"status": "success", "result": posted,
                                            "request_id": secrets.token_hex(16)}).encode())
                return
            file = sandbox.download(path)
            if file is not None:
                self._file(file)
                return
            if not path.startswith(API + "/"):
                raise SandboxError(404, "ExceptionCodes.NOT_FOUND", f"No route for {path}")
            if sandbox.strict_slashes and not path.endswith("/"):
                raise SandboxError(404, "ExceptionCodes.NOT_FOUND",
                                   f"No route for {path} (the API wants a trailing slash)")
            result = sandbox.route(path, query, user_id)
            body = {"status": "success", "result": result,
                    "request_id": secrets.token_hex(16)}
            self._send(200, json.dumps(body).encode())
        except SandboxError as exc:
            self._envelope_error(exc.status, exc.code, exc.message)
        finally:
            self._record(599)  # no answer was sent (a hang)

    def _file(self, file: _File) -> None:
        """A file's bytes, or the fault :attr:`Sandbox.file_faults` names for it."""
        fault = self.sandbox.file_faults.get((file.message_id, file.filename), "")
        if fault in ("404", "410", "403", "500"):
            code = {"404": "NOT_FOUND", "410": "GONE", "403": "FORBIDDEN", "500": "UNKNOWN_ERROR"}[fault]
            self._envelope_error(int(fault), f"ExceptionCodes.{code}", f"File unavailable ({fault})")
            return
        if fault == "html":
            self._send(200, b"<!DOCTYPE html><html><body><form>Log in</form></body></html>",
                       "text/html; charset=utf-8")
            return
        if fault == "json":
            self._envelope_error(200, "ExceptionCodes.UNKNOWN_ERROR", "File not ready")
            return
        if fault == "redirect":
            where = (f"http://localhost:{urlsplit(self.sandbox.base_url).port}{CDN_PATH}"
                     f"{file.message_id}/{quote_name(file.filename)}")
            self._send(302, b"", "text/plain", {"Location": where})
            return
        data = file.data[:-100] if fault == "short" else file.data
        self._send(200, data, "text/html" if fault == "wrong_type" else file.content_type,
                   {"Content-Disposition": content_disposition(file.filename)})

    def _record(self, status: int) -> None:
        """Log the request once, before its answer leaves (so a client never wins the race)."""
        if not getattr(self, "_logged", True):
            self._logged = True
            self.sandbox._log(self.command, self._path, self._query, status, self._arrived,
                              self._fault_name, self._authorized)

    def _fault(self, fault: Fault) -> int:
        """Answer with ``fault``; return the status sent, or 0 to go on normally."""
        sandbox = self.sandbox
        if fault.kind == "429":
            self._envelope_error(429, "ExceptionCodes.RATE_LIMITED",
                                 "Too many requests; slow down",
                                 {"Retry-After": f"{fault.retry_after:g}"})
            return 429
        if fault.kind in ("500", "502", "503"):
            code = int(fault.kind)
            headers = {"Retry-After": f"{fault.retry_after:g}"} if code == 503 else None
            self._envelope_error(code, "ExceptionCodes.UNKNOWN_ERROR",
                                 "An unknown error occurred", headers)
            return code
        if fault.kind == "hang":
            self._record(599)
            sandbox._stopping.wait(fault.hang_seconds)
            self.close_connection = True
            return 599
        if fault.kind == "error200":
            self._envelope_error(200, "ExceptionCodes.UNKNOWN_ERROR",
                                 "An unknown error has occurred, please try again")
            return 200
        if fault.kind == "auth200":
            self._envelope_error(200, "AuthExceptionCodes.ACCESS_TOKEN_REVOKED",
                                 "The access token has been revoked")
            return 200
        if fault.kind == "malformed":
            self._send(200, b'{"status": "success", "result": {"threads": [{"id": 4100')
            return 200
        if fault.kind == "html":
            self._send(200, b"<!DOCTYPE html><html><body><form>Log in</form></body></html>",
                       "text/html; charset=utf-8")
            return 200
        if fault.kind == "refused":
            self._envelope_error(400, "ExceptionCodes.NOT_ALLOWED",
                                 "You are not allowed to access this resource")
            return 400
        if fault.kind == "revoke":
            token = self.headers.get("Freelancer-OAuth-V1")
            with sandbox._lock:
                entry = sandbox._tokens.get(token or "")
                if entry is not None:
                    entry.revoked = True
            return 0
        return 0


def quote_name(filename: str) -> str:
    """A file name as one path segment: every reserved character escaped, dots too when
    the name is only dots (``..`` would otherwise be read as "the folder above")."""
    quoted = quote(filename, safe="")
    return quoted.replace(".", "%2E") if set(filename) <= {"."} else quoted


def content_disposition(filename: str) -> str:
    """RFC 6266/5987 header for any file name: an ASCII fallback plus the UTF-8 name."""
    from urllib.parse import quote

    fallback = "".join(ch if " " <= ch < "\x7f" and ch != '"' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def start_sandbox(seed: int = 1, threads: int = 8, messages_per_thread: int = 6,
                  **options: Any) -> Sandbox:
    """Build, seed and start a sandbox; see :class:`Sandbox` for ``options``."""
    return Sandbox(seed=seed, threads=threads, messages_per_thread=messages_per_thread,
                   **options).start()


__all__ = ["Clock", "Fault", "LoggedRequest", "Sandbox", "start_sandbox"]
