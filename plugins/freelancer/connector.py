"""Sync one Freelancer.com account: threads, messages, files, projects, bids, milestones.

Records made:

* every message in the owner's threads -> :class:`~agent.models.Message`
  (``thread_remote_id`` = the thread id; ``direction="out"`` when the owner sent it);
  files sent by contractors are downloaded up to ``max_attachment_bytes``, bigger ones
  are recorded with ``status="too_large"``;
* every awarded bid on the owner's projects -> :class:`~agent.models.Contract`
  (``remote_id`` ``bid:<id>``; ``spent`` = released milestones);
* every milestone whose release the freelancer requested ->
  :class:`~agent.models.Submission` with a ``delivery_waiting`` attachment, since
  Freelancer.com has no "submitted work" object (marketplaces.md section 2.3).

Requests per sync (``page`` = ``page_size``, at most 100):

* first sync: 1 ``users/0.1/self/`` (skipped when ``owner_id`` is set) + the projects,
  bids and milestones pages + ``ceil(threads / page)`` thread pages + for each batch of
  ``threads_per_request`` threads ``ceil(messages / page)`` message pages + one
  ``threads/{id}/attachments/`` listing per thread whose new messages carry a
  contractor's files + one download per file under the cap;
* a no-op sync: **one request**, a threads page filtered with ``from_updated_time``,
  while the contract data is younger than ``contracts_every_minutes``; when it is due,
  also one projects, one bids and one milestones page per ``page`` projects
  (the API has no "updated since" filter for them).

The cursor keeps the last ``time_updated`` seen (``since``) and the boundary: the threads
that had exactly that time (with their message counts) and the ids of the messages that
had it, so the next inclusive ``from_updated_time`` query neither repeats nor skips
anything. A sync in progress (``run``) keeps the threads still to read, so a crash resumes
where the last stored page left off.

Sending (``send``: review feedback, instructions) posts the text as a form to
``POST /api/messages/0.1/threads/{thread_id}/messages/`` (``Outgoing.thread_remote_id`` =
the thread id) and returns the new message's id; the next sync reads it back as an
outgoing message. A deliverable without a thread (a milestone whose release was
requested) goes to the newest thread with that freelancer, on its project when
``Outgoing.extra["project_id"]`` says which (one extra threads request). The post is not
retried after a timeout, a 5xx or an error envelope (it may have been applied); see
:meth:`FreelancerApi.post_form`.

Pages are read ``prefetch_pages`` ahead in a worker thread, so the host's store writes
fall inside the gaps the rate limit leaves between requests instead of adding to them
(the first sync of 1,000 threads x 20 messages takes 1.04x the time 10 requests/s
allow; see ``tests/benchmarks/freelancer_bench.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import mimetypes
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.connector import Connector, SourceContext
from agent.errors import AuthError, SourceError, TransientError
from agent.files import ensure_private_dir, sanitize_filename
from agent.http import DownloadFailed
from agent.models import (
    Attachment,
    Contract,
    Cursor,
    Direction,
    Identity,
    Message,
    Outgoing,
    Page,
    Record,
    Submission,
)
from agent.text import clean_line
from plugins.freelancer.api import FreelancerApi, NotFound, as_int
from plugins.freelancer.settings import FreelancerSettings

PLATFORM = "freelancer"
CURSOR_VERSION = 1
RELEASE_REQUESTED = frozenset({"requested_release", "request_release", "release_requested",
                               "requested"})
#: "Released" in the web app is ``cleared`` in the API (FAND ``isReleased()``)
PAID = frozenset({"cleared"})
#: every threads folder (FMCP): the default listing leaves archived threads out
FOLDERS = ("inbox", "sent", "freelancer", "archived", "requests", "none")
#: syncs a file that failed for a passing reason is tried again, then left ``unavailable``
DOWNLOAD_TRIES = 5
AWARDED = frozenset({"awarded", "accepted"})
JSONDict = dict[str, Any]


def _when(epoch: Any) -> datetime:
    return datetime.fromtimestamp(as_int(epoch) or 0, UTC)


def _updated(message: JSONDict) -> int:
    return max(as_int(message.get("time_created")) or 0, as_int(message.get("time_updated")) or 0)


def _digest(record: Record) -> str:
    raw = json.dumps(asdict(record), sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:20]


def _chunks(values: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def thread_fields(item: JSONDict) -> tuple[int | None, JSONDict]:
    """A threads-list item's id and inner ``thread`` object, wherever the id sits."""
    found = item.get("thread")
    inner: JSONDict = found if isinstance(found, dict) else {}
    tid = as_int(item.get("id")) or as_int(inner.get("id"))
    return tid, inner


def milestone_items(raw: Any) -> list[JSONDict]:
    """Milestones as a list, whether the API sent a list or an object keyed by id."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        items = []
        for key, value in raw.items():
            if isinstance(value, dict):
                item = dict(value)
                item.setdefault("id", as_int(key))
                items.append(item)
        return items
    if isinstance(raw, list):
        return [dict(v) for v in raw if isinstance(v, dict)]
    raise SourceError(f"Freelancer.com sent milestones as {type(raw).__name__}, "
                      "not a list or an object; the API may have changed")


class FreelancerConnector(Connector[FreelancerSettings]):
    """One sync of one Freelancer.com account (see the module docstring for the costs)."""

    deadline = 3 * 3600.0

    def __init__(self, settings: FreelancerSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self.api = FreelancerApi(settings, context)
        self.users: dict[int, JSONDict] = {}
        self.owner_id: int = 0
        self._thread_files: dict[int, dict[tuple[int, str], JSONDict]] = {}
        self._downloads: set[Path] = set()
        self._listed: dict[int, JSONDict] = {}
        self._scratch = context.scratch_dir
        #: messages with a file that failed for a passing reason: {message id: entry}
        self._retry: dict[int, JSONDict] = {}
        self._failed_here: list[str] = []

    def _warn(self, text: str) -> None:
        """A part of the sync failed while the rest went on: log it, show it in ``status``."""
        self.context.log.warning("%s: %s", self.context.source, text)
        if text not in self.context.warnings:
            self.context.warnings.append(text)

    def _snapshot(self, state: JSONDict) -> JSONDict:
        """The cursor to commit: ``state`` plus the files to try again."""
        state["retry"] = sorted(self._retry.values(), key=lambda e: int(e["message"]))
        return json.loads(json.dumps(state))  # type: ignore[no-any-return]

    @property
    def requests_made(self) -> int:
        return self.api.requests_made

    def close(self) -> None:
        self.api.close()
        for path in self._downloads:
            path.unlink(missing_ok=True)
        self._downloads.clear()

    def _discard(self, records: Sequence[Record]) -> None:
        """Delete the downloads of a page the host has stored (it copied them)."""
        for record in records:
            if isinstance(record, Message):
                for att in record.attachments:
                    if att.path is not None and att.path in self._downloads:
                        att.path.unlink(missing_ok=True)
                        self._downloads.discard(att.path)

    # -- sending -----------------------------------------------------------------------

    def send(self, outgoing: Outgoing) -> str:
        """Post ``outgoing.text`` to its thread; return the new message's id."""
        if not outgoing.text.strip():
            raise SourceError("the message is empty; nothing was sent to Freelancer.com")
        raw = outgoing.thread_remote_id.strip()
        tid = as_int(raw) if raw else self._thread_with(outgoing)
        if not tid or tid <= 0:
            raise SourceError(f"{raw!r} is not a Freelancer.com thread id; nothing was sent. "
                              "Reply on Freelancer.com instead, and report this.")
        what = f"the message to thread {tid}"
        try:
            result = self.api.post_form(f"messages/0.1/threads/{tid}/messages/",
                                        {"message": outgoing.text}, what=what)
        except NotFound:
            raise SourceError(
                f"Freelancer.com has no thread {tid} you can write to (HTTP 404); it may "
                "have been deleted. Nothing was sent; reply on Freelancer.com instead.") from None
        mid = as_int(result.get("id"))
        if not mid:
            raise SourceError(f"Freelancer.com answered {what} without a message id; it may "
                              "or may not have been posted. Check the thread on Freelancer.com "
                              "before sending it again.")
        self.context.log.info("%s: posted message %s to thread %s", self.context.source,
                              mid, tid)
        return str(mid)

    def _thread_with(self, outgoing: Outgoing) -> int:
        """The newest thread with the recipient (on the project, when known)."""
        uid = as_int(outgoing.to.address)
        if not uid:
            raise SourceError(f"{outgoing.to.address!r} is not a Freelancer.com user id and "
                              "no thread was given; nothing was sent")
        params: JSONDict = {"members[]": [uid], "limit": 10, "folders[]": list(FOLDERS)}
        project = as_int(outgoing.extra.get("project_id"))
        if project:
            params.update({"contexts[]": [project], "context_type": "project"})
        result = self.api.get("messages/0.1/threads/", params)
        found: list[tuple[int, int]] = []
        for item in result.get("threads") or []:
            if isinstance(item, dict):
                tid, inner = thread_fields(item)
                members = {as_int(m) for m in inner.get("members") or []}
                if tid and (not members or uid in members):
                    found.append((as_int(item.get("time_updated")) or 0, tid))
        if found:
            return max(found)[1]
        raise SourceError(
            f"there is no Freelancer.com thread with {outgoing.to.name or uid} to send "
            f"through; run `retainer sync {self.context.source}`, or message them on "
            "Freelancer.com. Nothing was sent.")

    # -- identities --------------------------------------------------------------------

    def _remember_users(self, users: Any) -> None:
        if isinstance(users, dict):
            for key, value in users.items():
                if isinstance(value, dict):
                    uid = as_int(value.get("id")) or as_int(key)
                    if uid:
                        self.users[uid] = value

    def identity(self, user_id: int) -> Identity:
        user = self.users.get(user_id) or {}
        name = clean_line(user.get("display_name") or user.get("public_name")
                          or user.get("username"))
        username = clean_line(user.get("username"))
        profile = f"{self.api.site_url}/u/{username}" if username else ""
        return Identity(PLATFORM, str(user_id), name, profile)

    # -- the sync ------------------------------------------------------------------------

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        """Yield the pages of one sync; read ahead while the host stores (``prefetch_pages``).

        A page's downloaded files are deleted when the host asks for the next page, by
        which time it has stored (copied) them.
        """
        self._scratch = self._own_scratch()
        pages = self._pages(cursor)
        if self.settings.prefetch_pages:
            pages = self._read_ahead(pages, self.settings.prefetch_pages)
        for page in pages:
            yield page
            self._discard(page.records)

    def _own_scratch(self) -> Path:
        """A folder of this source's own inside ``scratch_dir``, emptied of leftovers.

        The host empties ``scratch_dir`` itself when it first writes, which may come after
        this connector has downloaded the first files; a subfolder is left alone. One
        sync per source runs at a time (the host holds a lock), so leftovers here are
        from a killed run.
        """
        folder = self.context.scratch_dir / f"freelancer-{sanitize_filename(self.context.source)}"
        ensure_private_dir(folder)
        for entry in folder.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)
        return folder

    def _read_ahead(self, pages: Iterator[Page], depth: int) -> Iterator[Page]:
        """Run ``pages`` in a worker thread, at most ``depth`` pages ahead of the host.

        The rate limit spaces the requests anyway; this way the host's store writes
        happen inside those gaps instead of after them. Pages and the error that ends
        the sync arrive in order, so what came before an error is still stored.
        """
        ahead: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        stop = threading.Event()

        def hand_over(item: tuple[str, Any]) -> bool:
            while not stop.is_set():
                try:
                    ahead.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for page in pages:
                    if not hand_over(("page", page)):
                        return
            except BaseException as exc:  # handed to the host's thread, raised there
                hand_over(("error", exc))
                return
            hand_over(("done", None))

        worker = threading.Thread(target=produce, daemon=True,
                                  name=f"retainer-freelancer-{self.context.source}")
        worker.start()
        try:
            while True:
                kind, value = ahead.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            stop.set()
            # a request in flight ends by its own timeout; the thread is a daemon and
            # hands nothing over once stopped, so the host need not wait for it
            worker.join(timeout=2.0)

    def _pages(self, cursor: Cursor) -> Iterator[Page]:
        state: JSONDict = json.loads(json.dumps(dict(cursor))) if cursor else {}
        if state.get("v") not in (None, CURSOR_VERSION):
            state = {}
        state["v"] = CURSOR_VERSION
        self.owner_id = self._owner(state)
        for entry in state.get("retry") or []:
            if isinstance(entry, dict) and as_int(entry.get("message")):
                self._retry[int(entry["message"])] = dict(entry)
        if self._contracts_due(state):
            try:
                yield from self._sync_contracts(state)
            except (AuthError, TransientError):
                raise
            except SourceError as exc:  # e.g. no access to projects: messages still sync
                self._warn(f"projects, bids and milestones were not read ({exc}); messages "
                           "and files still sync")
        if self.context.should_stop():
            return
        if self._retry:
            yield from self._retry_downloads(state)
        if self.context.refetch:
            yield from self._backfill()
        yield from self._sync_messages(state)

    def _owner(self, state: JSONDict) -> int:
        if self.settings.owner_id:
            return self.settings.owner_id
        known = as_int(state.get("owner_id"))
        if known:
            return known
        me = self.api.get("users/0.1/self/")
        owner = as_int(me.get("id"))
        if not owner:
            raise SourceError("Freelancer.com did not say who owns the token "
                              "(users/0.1/self/ has no id); set owner_id in the source's "
                              "settings")
        self._remember_users({str(owner): me})
        state["owner_id"] = owner
        return owner

    def _contracts_due(self, state: JSONDict) -> bool:
        last = state.get("contracts_at")
        if not isinstance(last, int | float):
            return True
        age = time.time() - float(last)
        return age < 0 or age >= self.settings.contracts_every_minutes * 60

    # -- projects, bids, milestones ------------------------------------------------------

    def _sync_contracts(self, state: JSONDict) -> Iterator[Page]:
        page = self.settings.page_size
        projects: dict[int, JSONDict] = {}
        for item in self.api.pages("projects/0.1/projects/", "projects",
                                   {"owners[]": [self.owner_id]}, count_key="total_count"):
            pid = as_int(item.get("id"))
            if pid:
                projects[pid] = item
        ids = sorted(projects)
        bids: list[JSONDict] = []
        milestones: list[JSONDict] | None = []
        for chunk in _chunks(ids, page):
            for result in self.api.page_results("projects/0.1/bids/", "bids",
                                                {"projects[]": chunk, "user_details": "true"}):
                self._remember_users(result.get("users"))
                bids.extend(b for b in result.get("bids") or [] if isinstance(b, dict))
            if milestones is None:
                continue
            try:
                for result in self.api.page_results("projects/0.1/milestones/", "milestones",
                                                    {"projects[]": chunk, "user_details": "true"},
                                                    items=milestone_items):
                    self._remember_users(result.get("users"))
                    milestones.extend(milestone_items(result.get("milestones")))
            except (AuthError, TransientError):
                raise
            except SourceError as exc:  # contracts without what was paid; tried next sync
                self._warn(f"milestones were not read ({exc}); contracts, messages and files "
                           "still sync")
                milestones = None
        records = self._contract_records(projects, bids, milestones or [],
                                         spent_known=milestones is not None)
        digests: dict[str, str] = dict(state.get("contracts") or {})
        changed = [r for r in records if digests.get(r.remote_id) != _digest(r)]
        for record in changed:
            digests[record.remote_id] = _digest(record)
        hired = sorted({int(r.contractor.address) for r in records if isinstance(r, Contract)}
                       | {int(x) for x in state.get("hired") or []})
        state.update(contracts=digests, hired=hired)
        if milestones is not None:
            state["contracts_at"] = time.time()
        yield Page(changed, cursor=self._snapshot(state))

    def _contract_records(self, projects: dict[int, JSONDict], bids: list[JSONDict],
                          milestones: list[JSONDict], *, spent_known: bool = True) -> list[Record]:
        records: list[Record] = []
        awarded: dict[tuple[int, int], JSONDict] = {}
        for bid in bids:
            pid, uid = as_int(bid.get("project_id")), as_int(bid.get("bidder_id"))
            if pid in projects and uid and str(bid.get("award_status") or "") in AWARDED:
                awarded[(pid, uid)] = bid
        paid: dict[tuple[int, int], float] = {}
        for ms in milestones:
            key = (as_int(ms.get("project_id")) or 0, as_int(ms.get("bidder_id")) or 0)
            if str(ms.get("status") or "") in PAID:
                paid[key] = paid.get(key, 0.0) + float(ms.get("amount") or 0)
        for (pid, uid), bid in sorted(awarded.items()):
            project = projects[pid]
            hourly = str(project.get("type") or "") == "hourly"
            amount = float(bid.get("amount") or 0) or None
            currency = project.get("currency") or {}
            records.append(Contract(
                remote_id=f"bid:{bid.get('id')}", contractor=self.identity(uid),
                title=clean_line(project.get("title")),
                status=str(project.get("frontend_project_status") or project.get("status")
                           or ""),
                kind="hourly" if hourly else "fixed",
                started_at=_when(bid.get("time_awarded") or bid.get("time_submitted")),
                rate=amount if hourly else None, budget=None if hourly else amount,
                spent=round(paid.get((pid, uid), 0.0), 2) if spent_known else None,
                currency=str(currency.get("code") or "") if isinstance(currency, dict) else "",
                extra={"project_id": pid, "bid_id": bid.get("id"),
                       "project_url": self._project_url(project),
                       "bid_status": bid.get("frontend_bid_status")},
            ))
        for ms in sorted(milestones, key=lambda m: as_int(m.get("id")) or 0):
            pid, uid = as_int(ms.get("project_id")) or 0, as_int(ms.get("bidder_id")) or 0
            if pid not in projects or not uid or str(ms.get("status") or "") not in \
                    RELEASE_REQUESTED:
                continue
            project = projects[pid]
            award = awarded.get((pid, uid))
            # FAND names the text ``other_reason``; FSDK's fixture ``description``
            title = (clean_line(ms.get("description")) or clean_line(ms.get("other_reason"))
                     or f"Milestone {ms.get('id')}")
            currency = ms.get("currency") or project.get("currency") or {}
            code = str(currency.get("code") or "") if isinstance(currency, dict) else ""
            records.append(Submission(
                remote_id=f"milestone:{ms.get('id')}",
                submitted_at=_when(ms.get("time_updated") or ms.get("time_created")),
                contractor=self.identity(uid),
                attachment=Attachment(
                    filename=f"{title}.milestone", status="delivery_waiting",
                    url=self._project_url(project), remote_id=f"milestone:{ms.get('id')}",
                    note=(f"{ms.get('amount')} {code} milestone: the freelancer asked for "
                          "its release; review the work on Freelancer.com, then release "
                          "the milestone there").strip()),
                title=title, contract_remote_id=f"bid:{award.get('id')}" if award else "",
                under_contract=True,  # milestones exist only on an awarded project
                extra={"project_id": pid, "milestone_id": ms.get("id"),
                       "amount": ms.get("amount"), "currency": code,
                       "status": ms.get("status")},
            ))
        return records

    def _project_url(self, project: JSONDict) -> str:
        seo = project.get("seo_url")
        return f"{self.api.site_url}/projects/{seo}" if seo else ""

    # -- threads and messages ------------------------------------------------------------

    def _plan(self, state: JSONDict) -> JSONDict | None:
        """List the threads updated since the cursor; return the run to do, or None."""
        since = as_int(state.get("since")) or 0
        boundary: dict[str, Any] = dict(state.get("boundary") or {})
        params: JSONDict = {"count": "true", "message_count": "true", "folders[]": list(FOLDERS)}
        if since:
            params["from_updated_time"] = since
        listed: list[tuple[int, int, int | None]] = []
        for item in self.api.pages("messages/0.1/threads/", "threads", params,
                                   count_key="total_count"):
            tid, inner = thread_fields(item)
            if tid:
                self._listed[tid] = inner
            if not tid:
                raise SourceError("Freelancer.com listed a thread without an id; "
                                  "the API may have changed")
            listed.append((tid, as_int(item.get("time_updated")) or 0,
                           as_int(item.get("message_count"))))
        newest = max([since, *(tu for _, tu, _ in listed)])
        todo: list[int] = []
        seen_ids: set[int] = set()
        for tid, tu, count in listed:
            if tid in seen_ids:
                continue  # the listing shifted while we paged; once is enough
            seen_ids.add(tid)
            if tu == since and boundary.get(str(tid)) == [tu, count]:
                continue  # read in full last time and unchanged since
            todo.append(tid)
        new_boundary = {str(tid): [tu, count] for tid, tu, count in listed if tu == newest}
        if not todo:
            if newest != since or new_boundary != boundary:
                state.update(since=newest, boundary=new_boundary,
                             seen=[] if newest != since else state.get("seen") or [])
                return {"pending": [], "commit_only": True}
            return None
        return {"from": since, "to": newest, "pending": todo, "boundary": new_boundary,
                "seen": [], "prev_seen": list(state.get("seen") or []) if since else []}

    def _sync_messages(self, state: JSONDict) -> Iterator[Page]:
        run = state.get("run")
        if not isinstance(run, dict) or not isinstance(run.get("pending"), list):
            run = self._plan(state)
            if run is None:
                return
            if run.get("commit_only"):
                state.pop("run", None)
                yield Page([], cursor=self._snapshot(state))
                return
        hired = {int(x) for x in state.get("hired") or []}
        prev_seen = {int(x) for x in run.get("prev_seen") or []}
        pending: list[int] = [int(t) for t in run["pending"]]
        total_threads = len(pending) + int(run.get("done", 0))
        while pending:
            batch = pending[: self.settings.threads_per_request]
            params: JSONDict = {"threads[]": batch, "user_details": "true",
                                "thread_details": "true", "to_updated_time": run["to"]}
            if run["from"]:
                params["from_updated_time"] = run["from"]
            held: list[Record] | None = None  # one page behind, to give the last the cursor
            for result in self.api.page_results("messages/0.1/messages/", "messages", params,
                                                count_key="unfiltered_count"):
                records = self._page_records(result, run, prev_seen, hired)
                if held is not None:
                    yield Page(held, progress=(int(run.get("done", 0)), total_threads))
                held = records
            pending = pending[len(batch):]
            run["pending"] = pending
            run["done"] = int(run.get("done", 0)) + len(batch)
            if pending:
                state["run"] = run
            else:
                state.pop("run", None)
                state.update(since=run["to"], boundary=run["boundary"],
                             seen=sorted(set(run["seen"])))
            yield Page(held or [], cursor=self._snapshot(state),
                       progress=(run["done"], total_threads))
            if self.context.should_stop():
                return

    def _page_records(self, result: JSONDict, run: JSONDict, prev_seen: set[int],
                      hired: set[int]) -> list[Record]:
        self._remember_users(result.get("users"))
        details = result.get("threads")
        details = details if isinstance(details, dict) else {}
        records: list[Record] = []
        for raw in result.get("messages") or []:
            if not isinstance(raw, dict):
                continue
            mid = as_int(raw.get("id"))
            if not mid:
                raise SourceError("Freelancer.com sent a message without an id; "
                                  "the API may have changed")
            stamp = _updated(raw)
            if stamp == run["from"] and mid in prev_seen:
                continue  # stored last time, at the boundary second
            if stamp == run["to"]:
                run["seen"].append(mid)
            records.append(self._message(raw, details, hired))
            self._note_retry(mid, as_int(raw.get("thread_id")) or 0)
        return records

    def _note_retry(self, mid: int, tid: int) -> None:
        """Remember a message whose file failed for a passing reason, to read it again."""
        failed, self._failed_here = self._failed_here, []
        if not failed:
            self._retry.pop(mid, None)
            return
        entry = self._retry.get(mid) or {"message": mid, "thread": tid, "n": 0}
        entry["n"] = int(entry.get("n") or 0) + 1
        if entry["n"] >= DOWNLOAD_TRIES:
            self._warn(f"gave up on a file of message {mid} after {entry['n']} syncs ({failed[0]})")
            self._retry.pop(mid, None)
        else:
            self._retry[mid] = entry

    def _retry_downloads(self, state: JSONDict) -> Iterator[Page]:
        """Read again, by id, the messages whose files failed last time (100 a request)."""
        ids = sorted(self._retry)
        records: list[Record] = []
        for chunk in _chunks(ids, 100):
            result = self.api.get("messages/0.1/messages/", {
                "messages[]": chunk, "user_details": "true", "thread_details": "true"})
            self._remember_users(result.get("users"))
            details = result.get("threads")
            details = details if isinstance(details, dict) else {}
            found = set()
            for raw in result.get("messages") or []:
                mid = as_int(raw.get("id")) if isinstance(raw, dict) else None
                if not mid or mid not in self._retry:
                    continue
                found.add(mid)
                records.append(self._message(raw, details, set(), force_wanted=True))
                self._note_retry(mid, as_int(raw.get("thread_id")) or 0)
            for mid in set(chunk) - found:
                self._retry.pop(mid, None)  # deleted: nothing left to fetch
        yield Page(records, cursor=self._snapshot(state))

    def _backfill(self) -> Iterator[Page]:
        """Promotion backfill (``context.refetch``): messages of people just made
        contractors whose files were recorded, not downloaded, read again by id (100 a
        request), their files fetched by their links, marked ``backfill`` so the files
        enter the review queue with their own dates. The pages carry no cursor."""
        ids = sorted({mid for locator in self.context.refetch
                      if (mid := as_int((locator.get("stored") or {}).get("remote_id")))})
        if ids:
            self.context.log.info("%s: reading %d earlier message(s) again for the files of "
                                  "people just made contractors", self.context.source, len(ids))
        for chunk in _chunks(ids, 100):
            if self.context.should_stop():
                return
            result = self.api.get("messages/0.1/messages/", {
                "messages[]": chunk, "user_details": "true", "thread_details": "true"})
            self._remember_users(result.get("users"))
            details = result.get("threads")
            details = details if isinstance(details, dict) else {}
            records: list[Record] = []
            for raw in result.get("messages") or []:
                mid = as_int(raw.get("id")) if isinstance(raw, dict) else None
                if not mid or mid not in chunk:
                    continue
                message = self._message(raw, details, set())
                records.append(dataclasses.replace(message,
                                                   extra={**message.extra, "backfill": True}))
                self._note_retry(mid, as_int(raw.get("thread_id")) or 0)
            yield Page(records, cursor=None)

    def _message(self, raw: JSONDict, details: JSONDict, hired: set[int], *,
                 force_wanted: bool = False) -> Message:
        mid = as_int(raw.get("id")) or 0
        tid = as_int(raw.get("thread_id")) or 0
        # FAND names the sender ``from_user``; FSDK's post fixture ``from_user_id``
        sender_id = as_int(raw.get("from_user")) or as_int(raw.get("from_user_id")) or 0
        found = details.get(str(tid))
        # thread_details, else what the threads listing said (absent in a resumed run)
        thread: JSONDict = found if isinstance(found, dict) else self._listed.get(tid, {})
        members = [m for m in (as_int(x) for x in thread.get("members") or []) if m]
        sender = self.identity(sender_id)
        direction: Direction = "out" if sender_id == self.owner_id else "in"
        recipients = tuple(self.identity(m) for m in members if m != sender_id)
        wanted = direction == "in" and (force_wanted or sender_id in hired
                                        or self.context.wants_attachments(sender))
        attachments = tuple(self._attachments(raw, tid, mid, wanted, direction))
        context = thread.get("context") if isinstance(thread.get("context"), dict) else {}
        return Message(
            remote_id=str(mid), sent_at=_when(raw.get("time_created")), sender=sender,
            text=str(raw.get("message") or ""), thread_remote_id=str(tid),
            recipients=recipients, direction=direction, attachments=attachments,
            extra={"thread_type": thread.get("thread_type"), "context": context,
                   "message_source": raw.get("message_source")},
        )

    def _attachments(self, raw: JSONDict, tid: int, mid: int, wanted: bool,
                     direction: str) -> Iterable[Attachment]:
        for index, item in enumerate(raw.get("attachments") or []):
            if not isinstance(item, dict):
                continue
            remote = str(item.get("filename") or f"attachment-{item.get('key')}")
            # ".." or "a/../b" is never a path: fetched by message id + escaped name, kept
            # under a safe name
            filename = sanitize_filename(clean_line(remote), fallback=f"attachment-{mid}-{index + 1}")
            guessed = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            if not wanted:
                note = ("sent by you" if direction == "out"
                        else "not downloaded: the sender is not one of your contractors")
                yield Attachment(filename, guessed, remote_id=remote,
                                 status="not_downloaded", note=note)
                continue
            info = self._files_of(tid).get((mid, remote), {})
            size = as_int(info.get("size") or info.get("file_size"))
            ctype = str(info.get("content_type") or guessed)
            own = f"/api/messages/0.1/messages/{mid}/{_quote_name(remote)}"
            listed = str(info.get("url") or "")
            url = self.api.absolute(listed if listed and remote == filename else own)
            cap = self.context.max_attachment_bytes
            if size is not None and size > cap:
                yield self._too_large(filename, ctype, size, url, cap, remote)
                continue
            try:
                path = self.api.download(url, self._scratch, cap, expected_type=ctype,
                                         expected_size=size)
            except DownloadFailed as exc:
                if exc.permanent:
                    note = (f"Freelancer.com would not hand this file over ({exc.reason}); "
                            "open the thread on Freelancer.com")
                else:
                    self._failed_here.append(exc.reason)
                    note = (f"Freelancer.com did not send the file ({exc.reason}); Retainer "
                            "tries again at the next sync")
                self.context.log.warning("%s: file %r of message %s unavailable: %s",
                                         self.context.source, filename, mid, exc.reason)
                yield Attachment(filename, ctype, size=size, url=url, remote_id=remote,
                                 status="unavailable", note=note)
                continue
            if path is None:
                yield self._too_large(filename, ctype, size, url, cap, remote)
                continue
            self._downloads.add(path)
            yield Attachment(filename, ctype, size=path.stat().st_size, path=path,
                             url=url, remote_id=remote)

    @staticmethod
    def _too_large(filename: str, ctype: str, size: int | None, url: str,
                   cap: int, remote: str) -> Attachment:
        told = f"{size} bytes" if size is not None else "more"
        return Attachment(filename, ctype, size=size, url=url, remote_id=remote,
                          status="too_large",
                          note=(f"{told}, over the {math.ceil(cap / 1048576)} MB cap "
                                "(agent.max_attachment_mb): not downloaded; fetch it on "
                                "Freelancer.com or raise the cap"))

    def _files_of(self, tid: int) -> dict[tuple[int, str], JSONDict]:
        """The thread's shared files by (message id, filename): one request per thread."""
        if tid not in self._thread_files:
            try:
                result = self.api.get(f"messages/0.1/threads/{tid}/attachments/")
            except NotFound:
                result = {}  # the files are tried at their usual address
            except (AuthError, TransientError):
                raise
            except SourceError as exc:
                self._warn(f"the file list of thread {tid} was not read ({exc}); its files "
                           "are tried at their usual address")
                result = {}
            found: dict[tuple[int, str], JSONDict] = {}
            items = result.get("attachments")
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict):
                    key = (as_int(item.get("message_id")) or 0, str(item.get("filename")))
                    found[key] = item
            self._thread_files[tid] = found
        return self._thread_files[tid]


def _quote_name(filename: str) -> str:
    """A file name as one URL path segment: everything reserved escaped, and the dots of a
    name made only of dots too (``..`` would otherwise mean "the folder above")."""
    from urllib.parse import quote

    quoted = quote(filename, safe="")
    return quoted.replace(".", "%2E") if set(filename) <= {"."} else quoted
