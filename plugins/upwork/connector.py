"""The Upwork connector: rooms and stories, contracts, offers, milestones, submissions.

How a sync walks the API
------------------------

1. ``user { id }`` once, the first time; the owner's id is kept in the cursor and tells
   outgoing stories from incoming ones.
2. ``roomList`` (newest activity first, ``page_size`` rooms a page). After the first
   full pass the filter ``activeSince_eq`` is set to the cursor's watermark, so only
   rooms with activity since then come back.
3. For each listed room whose ``latestStory`` differs from the one the cursor recorded:
   the contracts (``contractList``, 10 ids a request) and pending offers (``offer``) the
   page's changed rooms point to, then ``roomStories`` for that room, paged, limited to
   ``storyCreatedDateTime_bt`` = [the room's last story time, its listed latest story].
4. Attachments with a download link in their metadata are fetched when the sender is a
   contractor (anyone with a contract or offer in the room, or already in the roster),
   unless over the size cap: then they are recorded ``too_large``. Redirects are
   followed; the bearer token goes only to Upwork's own hosts. A file Upwork will not
   hand over (403/404/410) is recorded ``unavailable`` with the reason; one that fails
   for a passing reason (5xx, a login page or JSON error instead of the file, the wrong
   size) is ``unavailable`` too and its story is read again by id
   (``roomStory``) at the next sync, up to :data:`DOWNLOAD_TRIES` times.
5. Errors next to data are partial: stories whose author cannot be resolved are
   skipped, a contracts or offer query Upwork refuses (partner tiers without contract
   access) is a warning in ``retainer status``, and messages and files keep syncing.

Requests a sync costs
---------------------

* **No-op sync: exactly 1 request**, the first ``roomList`` page with
  ``activeSince_eq`` = watermark (plus 1 token refresh when the access token expires
  within 5 minutes, once a day). Rooms whose activity is exactly at the watermark come
  back and are skipped by comparing ``latestStory.id`` with the cursor.
* **First sync**: 1 (``user``) + ceil(rooms / page_size) ``roomList`` pages
  + for each room ceil(stories / page_size) ``roomStories`` pages
  + ceil(contracts per roomList page / 10) ``contractList`` calls + 1 per pending offer
  + 1 per downloaded attachment. This is the minimum the API's paging allows for
  reading everything with these queries.
* **Incremental sync**: 1 ``roomList`` page per ``page_size`` active rooms, plus the
  above for each room with new stories.

Contracts, milestones and submissions are re-read when their room shows new activity
(Upwork posts a story in the contract room when work is submitted or a milestone
changes); a contract that changes with no story in its room is picked up the next time
the room is active.

Sending (``send``: review feedback, instructions) posts one ``createRoomStoryV2`` story
to the room the work came from (``Outgoing.thread_remote_id`` = the room id) and returns
the new story's id; the next sync reads it back as an outgoing message. The post is
**not retried** after a timeout, a dropped connection or a 5xx, since Upwork may have
posted it already: those raise :class:`~agent.errors.TransientError` saying to check the
room first. Only a 429 and a refused connection (nothing reached Upwork) are retried.

The cursor (JSON) is ``{"v": 1, "owner_id", "owner_name", "watermark", "rooms":
{room_id: {"id": latest story id, "t": its createdDateTime}}}``. A room's entry is
committed with the page holding its last stories, so a killed sync resumes at the
first room not fully read; records of a half-read room come again and the store's
upsert absorbs them. The watermark moves only after a full pass, and only to the
newest activity the *first* listing page showed, so a story posted while a sync runs
is never skipped.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from agent.connector import Connector, SourceContext
from agent.errors import AuthError, RateLimited, SourceError, TransientError
from agent.files import sanitize_filename
from agent.http import DownloadFailed, HttpClient, NotDelivered
from agent.models import (
    Attachment,
    Contract,
    Cursor,
    Identity,
    Message,
    Outgoing,
    Page,
    Record,
    Submission,
)
from agent.text import clean_line
from plugins.upwork import queries
from plugins.upwork.oauth import TokenManager, signin_hint
from plugins.upwork.settings import UpworkSettings

PLATFORM = "upwork"
CURSOR_VERSION = 1
REVIEW_DAYS = 14
#: times a send is tried again when the connection is refused (nothing was sent)
SEND_REFUSED_RETRIES = 2
#: milestone states (``OfferMilestoneState``) that mean the owner paid the milestone
PAID_STATES = frozenset({"Paid", "PaidByUpwork"})
#: syncs a file that failed for a passing reason is tried again, then left ``unavailable``
DOWNLOAD_TRIES = 5
#: Upwork's own hosts: the only ones (besides ``api_url``'s) that get the bearer token
UPWORK_HOSTS = ("api.upwork.com", "www.upwork.com")

_URL_KEYS = ("downloadurl", "url", "link", "fileurl", "downloadlink")
_NAME_KEYS = ("filename", "name", "title", "originalname")
_SIZE_KEYS = ("filesize", "size", "bytes")
_TYPE_KEYS = ("mimetype", "contenttype", "content_type", "type")


def parse_time(value: Any) -> datetime | None:
    """An Upwork timestamp: ISO-8601 (``...Z``), or epoch seconds/milliseconds as digits."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and re.fullmatch(r"\d{9,14}", value)):
        number = float(value)
        if number > 1e11:
            number /= 1000.0
        return datetime.fromtimestamp(number, UTC)
    if not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _money(value: Any) -> tuple[float | None, str]:
    if not isinstance(value, dict):
        return None, ""
    try:
        amount = float(value.get("rawValue"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        amount = None
    return amount, str(value.get("currency") or "")


def _graphql_failure(errors: list[Any], operation: str) -> SourceError:
    """Turn an ``errors[]`` array from an HTTP-200 answer into the right domain error."""
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    message = str(first.get("message") or "unknown error")[:300]
    extensions = first.get("extensions")
    if not isinstance(extensions, dict):
        extensions = {}
    classification = str(extensions.get("classification") or extensions.get("code") or "")
    lowered = f"{classification} {message}".lower()
    if classification == "ValidationError" or "fieldundefined" in lowered or "validation error" in lowered:
        return SourceError(
            f"Upwork rejected Retainer's {operation} query ({classification or 'ValidationError'}: "
            f"{message}). The Upwork API schema has changed; update Retainer, or report this."
        )
    if "unauthenticated" in lowered or "unauthorized" in lowered or (
        "token" in lowered and "expired" in lowered
    ):
        return AuthError(f"Upwork refused the sign-in while running {operation} ({message}).")
    if "permission" in lowered or "no access" in lowered or "scope" in lowered or "forbidden" in lowered:
        return SourceError(
            f"Upwork denied {operation}: {message}. Give the API key the messages and contracts "
            "read scopes in the Upwork API Center, then sign in again."
        )
    if "rate" in lowered and "limit" in lowered:
        return RateLimited(f"Upwork rate-limited {operation} ({message}).")
    if "timeout" in lowered or "internal" in lowered or "unavailable" in lowered:
        return TransientError(f"Upwork failed {operation} on its side ({message}); the next sync retries.")
    return SourceError(f"Upwork answered {operation} with an error: {message}")


def _send_failure(errors: list[Any], where: str, source: str) -> SourceError:
    """The domain error for an ``errors[]`` answer to the send mutation (HTTP 200)."""
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    message = str(first.get("message") or "unknown error")[:300]
    failure = _graphql_failure(errors, "RetainerSendStory")
    if isinstance(failure, AuthError):
        return AuthError(f"Upwork refused the sign-in ({message}); the message to {where} was "
                         f"not sent. {signin_hint(source)}")
    if isinstance(failure, RateLimited):
        return RateLimited(f"Upwork rate-limited the message to {where} ({message}); it was not "
                           "sent. Send it again in a minute.")
    if "schema has changed" in str(failure):
        return SourceError(f"{failure} The message to {where} was not sent.")
    lowered = message.lower()
    if "permission" in lowered or "no access" in lowered or "scope" in lowered or "forbidden" in lowered:
        return SourceError(
            f"Upwork denied posting to {where}: {message}. Give the API key the messages write "
            f"scope in the Upwork API Center, then: {signin_hint(source)} The message was not sent."
        )
    return SourceError(
        f"Upwork did not post the message to {where}: {message}. Check the room on Upwork "
        "before sending it again."
    )


class UpworkConnector(Connector[UpworkSettings]):
    """Syncs one Upwork account. See the module docstring for the request budget."""

    deadline: ClassVar[float] = 6 * 3600.0
    #: epoch seconds; tests replace it to move time for token expiry.
    wall_clock: ClassVar[Callable[[], float]] = staticmethod(time.time)

    def __init__(self, settings: UpworkSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self.http = HttpClient(
            base_url=settings.api_url,
            rate_per_second=settings.rate_per_second,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            auth_hint=signin_hint(context.source),
            log=context.log,
            should_stop=context.should_stop,
        )
        self.tokens = TokenManager(
            source=context.source,
            state_dir=context.state_dir,
            client_id=settings.client_id,
            client_secret=settings.client_secret.get_secret_value(),
            token_url=settings.token_url,
            http=self.http,
            wall_clock=type(self).wall_clock,
        )
        self._freelancers: set[str] = set()
        self._downloads: list[Path] = []
        #: stories with a file that failed for a passing reason: {story id: entry}
        self._retry: dict[str, dict[str, Any]] = {}
        self._failed_here: list[str] = []  # reasons of this story's passing failures
        self._credential_hosts = {urlsplit(settings.api_url).netloc.lower(), *UPWORK_HOSTS}

    def _warn(self, text: str) -> None:
        """A part of the sync failed while the rest went on: log it, show it in ``status``."""
        self.context.log.warning("%s: %s", self.context.source, text)
        if text not in self.context.warnings:
            self.context.warnings.append(text)

    @property
    def requests_made(self) -> int:
        return self.http.requests_made

    # -- GraphQL --------------------------------------------------------------------------

    def graphql(self, operation: str, variables: Mapping[str, Any] | None = None, *,
                partial: bool = False) -> dict[str, Any]:
        """Run one of :data:`queries.OPERATIONS`; return ``data`` or raise on ``errors``.

        With ``partial=True``, data that came *with* errors is returned (Upwork nulls the
        failing field up to its nearest nullable parent and answers the rest); the errors
        are logged and kept as warnings for ``retainer status``. Only an answer with no
        data at all, or with the operation's root field null, raises.
        """
        headers = {"Content-Type": "application/json"}
        if self.settings.tenant_id:
            headers["X-Upwork-API-TenantId"] = self.settings.tenant_id
        body = self.http.request(
            "POST",
            self.settings.api_url,
            headers=headers,
            json={
                "query": queries.OPERATIONS[operation],
                "variables": dict(variables or {}),
                "operationName": operation,
            },
            auth_header=self.tokens.auth_header,
            refresh_auth=self.tokens.force_refresh,
        )
        if not isinstance(body, dict):
            raise SourceError(f"Upwork answered {operation} with JSON that is not an object")
        errors = body.get("errors")
        data = body.get("data")
        if errors and partial and isinstance(data, dict) and any(v is not None for v in data.values()):
            listed = errors if isinstance(errors, list) else [errors]
            first = listed[0] if isinstance(listed[0], dict) else {}
            self._warn(f"Upwork answered {operation} with {len(listed)} error(s) next to the data "
                       f"(first: {clean_line(first.get('message'))[:200]}); the rest was read")
            return data
        if errors:
            failure = _graphql_failure(errors if isinstance(errors, list) else [errors], operation)
            if isinstance(failure, AuthError):
                failure = AuthError(f"{failure} {signin_hint(self.context.source)}")
            raise failure
        if not isinstance(data, dict):
            raise SourceError(f"Upwork answered {operation} without data; the API may have changed")
        return data

    # -- sending ---------------------------------------------------------------------------

    def send(self, outgoing: Outgoing) -> str:
        """Post ``outgoing.text`` to the room ``outgoing.thread_remote_id``; return the story id."""
        room_id = outgoing.thread_remote_id.strip()
        if not room_id:
            raise SourceError(
                f"there is no Upwork room to send to {outgoing.to.name or outgoing.to.address} "
                f"through; run `retainer sync {self.context.source}` so Retainer knows the room, "
                "or reply in the room on Upwork. Nothing was sent."
            )
        if not outgoing.text.strip():
            raise SourceError("the message is empty; nothing was sent to Upwork")
        where = f"room {room_id}"
        body = self._post_once("RetainerSendStory",
                               {"input": {"roomId": room_id, "message": outgoing.text}}, where)
        errors = body.get("errors")
        data = body.get("data")
        story = data.get("createRoomStoryV2") if isinstance(data, dict) else None
        if errors and isinstance(story, dict) and story.get("id"):
            # posted, with a complaint on the side: report it sent, so it is not sent twice
            self.context.log.warning("%s: Upwork posted story %s to %s but also answered "
                                     "errors: %s", self.context.source, story["id"], where,
                                     str(errors)[:300])
        elif errors:
            raise _send_failure(errors if isinstance(errors, list) else [errors], where,
                                self.context.source)
        if not isinstance(story, dict) or not story.get("id"):
            raise SourceError(
                f"Upwork answered the message to {where} without a story id; it may or may "
                "not have been posted. Check the room on Upwork before sending it again."
            )
        self.context.log.info("%s: posted story %s to %s", self.context.source, story["id"], where)
        return str(story["id"])

    def _post_once(self, operation: str, variables: Mapping[str, Any], where: str) -> dict[str, Any]:
        """POST a mutation without the client's retries: Upwork may have applied it.

        A 401 is retried once after a token refresh (Upwork did nothing), a 429 as the
        client does, a refused connection up to :data:`SEND_REFUSED_RETRIES` times.
        """
        headers = {"Content-Type": "application/json"}
        if self.settings.tenant_id:
            headers["X-Upwork-API-TenantId"] = self.settings.tenant_id
        payload = {"query": queries.OPERATIONS[operation], "variables": dict(variables),
                   "operationName": operation}
        self.tokens.auth_header()  # refresh an expiring token now, with the usual retries
        try:
            body = self.http.write_once(
                "POST", self.settings.api_url, headers=headers, json=payload,
                auth_header=self.tokens.auth_header, refresh_auth=self.tokens.force_refresh,
                refused_retries=SEND_REFUSED_RETRIES)
        except AuthError as exc:
            raise AuthError(f"{exc} The message to {where} was not sent.") from None
        except RateLimited as exc:
            raise RateLimited(
                f"Upwork rate-limited the message to {where}; it was not sent. "
                "Send it again in a minute.", retry_after=exc.retry_after) from None
        except NotDelivered:
            raise TransientError(
                f"could not reach Upwork (connection refused); the message to "
                f"{where} was not sent. Check the network and send it again."
            ) from None
        except TransientError as exc:
            raise TransientError(
                f"Upwork did not confirm the message to {where} ({exc}). It may or may "
                "not have been posted: check the room on Upwork before sending it again."
            ) from None
        except SourceError as exc:
            raise SourceError(f"{exc} The message to {where} was not sent.") from None
        if not isinstance(body, dict):
            raise SourceError(
                f"Upwork answered the message to {where} with JSON that is not an object; it "
                "may or may not have been posted. Check the room on Upwork before sending it again."
            )
        return body

    # -- sync -----------------------------------------------------------------------------

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        state = dict(cursor) if cursor.get("v") == CURSOR_VERSION else {}
        rooms_seen: dict[str, dict[str, str]] = dict(state.get("rooms") or {})
        owner_id = str(state.get("owner_id") or "")
        owner_name = str(state.get("owner_name") or "")
        if not owner_id:
            viewer = self.graphql("RetainerViewer").get("user") or {}
            owner_id = str(viewer.get("id") or "")
            owner_name = clean_line(viewer.get("name"))
            if not owner_id:
                raise SourceError("Upwork did not say who is signed in (user.id is empty)")
        watermark: str | None = state.get("watermark")
        new_watermark: str | None = None

        def snapshot(**changes: Any) -> dict[str, Any]:
            return {
                "v": CURSOR_VERSION,
                "owner_id": owner_id,
                "owner_name": owner_name,
                "watermark": watermark,
                "rooms": dict(rooms_seen),
                "retry": list(self._retry.values()),
                **changes,
            }

        for entry in state.get("retry") or []:
            if isinstance(entry, dict) and entry.get("story") and entry.get("room"):
                self._retry[str(entry["story"])] = dict(entry)
        if self._retry:
            yield from self._retry_downloads(owner_id, snapshot)
        if self.context.refetch:
            yield from self._backfill(owner_id)

        after: str | None = None
        pages = 0
        done = 0
        complete = False
        while True:
            if self.context.should_stop():
                return
            room_filter: dict[str, Any] = {}
            if watermark:
                room_filter["activeSince_eq"] = watermark
            pagination: dict[str, Any] = {"first": self.settings.page_size}
            if after:
                pagination["after"] = after
            listing = self.graphql(
                "RetainerRoomList",
                {"filter": room_filter, "pagination": pagination, "sortOrder": "DESC"},
                partial=True,
            ).get("roomList") or {}
            rooms = [e["node"] for e in listing.get("edges") or [] if isinstance(e, dict) and e.get("node")]
            total = int(listing.get("totalCount") or len(rooms))
            if pages == 0:
                times = [
                    r["latestStory"]["createdDateTime"]
                    for r in rooms
                    if isinstance(r.get("latestStory"), dict) and r["latestStory"].get("createdDateTime")
                ]
                newest = max(times, key=lambda t: parse_time(t) or datetime.min.replace(tzinfo=UTC),
                             default=None)
                new_watermark = _later(watermark, newest)
            pages += 1
            changed = [room for room in rooms if self._changed(room, rooms_seen)]
            if changed and self.settings.contracts:
                records = list(self._contracts_for(changed, owner_id))
                if records:
                    yield Page(records, cursor=None)
            for room in changed:
                if self.context.should_stop():
                    return
                yield from self._room_pages(room, rooms_seen, owner_id, snapshot, (done, total))
                done += 1
            done += len(rooms) - len(changed)
            info = listing.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                complete = True
                break
            if self.settings.max_pages and pages >= self.settings.max_pages:
                self.context.log.info(
                    "%s: stopped after %d room pages (max_pages); the next sync continues",
                    self.context.source, pages,
                )
                break
            after = str(info["endCursor"])
        if complete:
            watermark = new_watermark
        yield Page([], cursor=snapshot(), progress=(total, total) if complete else None)

    def close(self) -> None:
        self._cleanup_downloads()
        self.http.close()

    # -- rooms and stories -----------------------------------------------------------------

    @staticmethod
    def _changed(room: Mapping[str, Any], seen: Mapping[str, Mapping[str, str]]) -> bool:
        latest = room.get("latestStory") or {}
        mark = seen.get(str(room.get("id")))
        if mark is None:
            return True
        return bool(latest.get("id")) and latest.get("id") != mark.get("id")

    def _room_pages(
        self,
        room: Mapping[str, Any],
        seen: dict[str, dict[str, str]],
        owner_id: str,
        snapshot: Callable[..., dict[str, Any]],
        progress: tuple[int, int],
    ) -> Iterator[Page]:
        room_id = str(room["id"])
        latest = room.get("latestStory") or {}
        mark = seen.get(room_id)
        members = {
            str(u["user"]["id"]): u["user"]
            for u in room.get("roomUsers") or []
            if isinstance(u, dict) and isinstance(u.get("user"), dict) and u["user"].get("id")
        }
        subject = clean_line(room.get("roomName") or room.get("topic"))
        if not latest.get("id"):
            seen[room_id] = {"id": "", "t": ""}
            yield Page([], cursor=snapshot(), progress=progress)
            return
        story_filter: dict[str, Any] = {"pagination": {"first": self.settings.page_size}}
        if mark and mark.get("t"):
            story_filter["storyCreatedDateTime_bt"] = {
                "rangeStart": mark["t"],
                "rangeEnd": latest.get("createdDateTime") or mark["t"],
            }
        newest: dict[str, str] = {"id": str(latest["id"]), "t": str(latest.get("createdDateTime") or "")}
        after: str | None = None
        while True:
            if after:
                story_filter["pagination"] = {"first": self.settings.page_size, "after": after}
            stories = self.graphql(
                "RetainerRoomStories", {"filter": {"roomId_eq": room_id, "storyFilter": story_filter}},
                partial=True,
            ).get("roomStories") or {}
            records: list[Record] = []
            for edge in stories.get("edges") or []:
                node = edge.get("node") if isinstance(edge, dict) else None
                if not node or (mark and node.get("id") == mark.get("id")):
                    continue
                message = self._message(node, room_id, subject, owner_id, members)
                if message is not None:
                    records.append(message)
                    self._note_retry(message.remote_id, room_id, subject, members)
                    created = str(node.get("createdDateTime") or "")
                    if (parse_time(created) or _EPOCH) > (parse_time(newest["t"]) or _EPOCH):
                        newest = {"id": str(node["id"]), "t": created}
            info = stories.get("pageInfo") or {}
            last = not info.get("hasNextPage") or not info.get("endCursor")
            if last:
                seen[room_id] = newest
            yield Page(records, cursor=snapshot() if last else None, progress=progress)
            self._cleanup_downloads()
            if last:
                return
            after = str(info["endCursor"])

    def _message(
        self,
        node: Mapping[str, Any],
        room_id: str,
        subject: str,
        owner_id: str,
        members: Mapping[str, Mapping[str, Any]],
    ) -> Message | None:
        sent_at = parse_time(node.get("createdDateTime"))
        if sent_at is None:
            self.context.log.warning("story %s in room %s has no readable time; skipped",
                                     node.get("id"), room_id)
            return None
        user = node.get("user") or {}
        sender = _identity(user)
        outgoing = bool(user.get("id")) and str(user.get("id")) == owner_id
        recipients = tuple(_identity(u) for uid, u in members.items() if uid != str(user.get("id")))
        attachments = tuple(
            self._attachment(a, sender, outgoing)
            for a in node.get("attachments") or []
            if isinstance(a, dict)
        )
        return Message(
            remote_id=str(node["id"]),
            sent_at=sent_at,
            sender=sender,
            subject=subject,
            text=str(node.get("message") or ""),
            thread_remote_id=room_id,
            recipients=recipients,
            direction="out" if outgoing else "in",
            attachments=attachments,
            extra={"room_id": room_id, "updated_at": node.get("updatedDateTime") or ""},
        )

    def _attachment(self, raw: Mapping[str, Any], sender: Identity, outgoing: bool) -> Attachment:
        meta: dict[str, str] = {}
        for item in raw.get("metadata") or []:
            if isinstance(item, dict) and item.get("key") is not None:
                meta[str(item["key"]).lower()] = str(item.get("value") or "")
        ref = str(raw.get("objectReferenceId") or "")
        fallback = f"{clean_line(raw.get('objectType') or 'file')}-{ref}".lower()
        # a name like "..", "." or "a/../b" is never used as a path: the file is fetched by
        # its link (its id) and kept under a safe name
        filename = sanitize_filename(clean_line(next((meta[k] for k in _NAME_KEYS if meta.get(k)), "")),
                                     fallback=sanitize_filename(fallback))
        content_type = next(
            (meta[k] for k in _TYPE_KEYS if "/" in meta.get(k, "")), "application/octet-stream"
        )
        size_text = next((meta[k] for k in _SIZE_KEYS if meta.get(k, "").isdigit()), "")
        size = int(size_text) if size_text else None
        url = next((meta[k] for k in _URL_KEYS if meta.get(k, "").startswith(("http://", "https://"))), "")
        cap = self.context.max_attachment_bytes
        common: dict[str, Any] = {
            "filename": filename, "content_type": content_type, "size": size, "url": url, "remote_id": ref,
        }
        if size is not None and size > cap:
            return Attachment(**common, status="too_large", note=_too_large_note(size, cap))
        if not url:
            return Attachment(**common, status="not_downloaded",
                              note="Upwork gave no download link; open the room on Upwork to get it")
        wanted = (
            not outgoing
            and self.settings.download_attachments
            and (sender.address in self._freelancers or self.context.wants_attachments(sender))
        )
        if not wanted:
            return Attachment(**common, status="not_downloaded")
        try:
            path = self.http.download(
                url, self.context.scratch_dir, max_bytes=cap, auth_header=self.tokens.auth_header,
                credential_hosts=self._credential_hosts, expected_type=content_type,
                expected_size=size,
            )
        except DownloadFailed as exc:
            if exc.permanent:
                note = f"Upwork would not hand this file over ({exc.reason}); open the room on Upwork"
            else:
                self._failed_here.append(exc.reason)
                note = (f"Upwork did not send the file ({exc.reason}); Retainer tries again "
                        "at the next sync")
            self.context.log.warning("%s: file %s (%s) unavailable: %s", self.context.source,
                                     ref, filename, exc.reason)
            return Attachment(**common, status="unavailable", note=note)
        if path is None:
            return Attachment(**common, status="too_large", note=_too_large_note(size, cap))
        self._downloads.append(path)
        common["size"] = path.stat().st_size
        return Attachment(**common, path=path, status="stored")

    def _note_retry(self, story_id: str, room_id: str, subject: str,
                    members: Mapping[str, Mapping[str, Any]]) -> None:
        """Remember a story whose file failed for a passing reason, to read it again next sync."""
        failed, self._failed_here = self._failed_here, []
        if not failed:
            self._retry.pop(story_id, None)
            return
        entry = self._retry.get(story_id) or {"room": room_id, "story": story_id, "n": 0}
        entry.update(subject=subject, n=int(entry.get("n") or 0) + 1, members={
            uid: {"id": uid, "name": clean_line(u.get("name")), "publicUrl": str(u.get("publicUrl") or "")}
            for uid, u in members.items()
        })
        if entry["n"] >= DOWNLOAD_TRIES:
            self._warn(f"gave up on a file in story {story_id} after {entry['n']} syncs ({failed[0]})")
            self._retry.pop(story_id, None)
        else:
            self._retry[story_id] = entry

    def _retry_downloads(self, owner_id: str, snapshot: Callable[..., dict[str, Any]]) -> Iterator[Page]:
        """Read again, by id, the stories whose files failed last time (one request each)."""
        records: list[Record] = []
        for story_id, entry in list(self._retry.items()):
            if self.context.should_stop():
                break
            room_id = str(entry["room"])
            node = self.graphql("RetainerRoomStory", {"roomId": room_id, "storyId": story_id},
                                partial=True).get("roomStory")
            if not isinstance(node, dict):
                self._retry.pop(story_id, None)  # the story is gone: nothing left to fetch
                continue
            members = {str(k): v for k, v in (entry.get("members") or {}).items() if isinstance(v, dict)}
            author = node.get("user")
            if isinstance(author, dict) and author.get("id"):  # its files were wanted last time: still wanted
                self._freelancers.add(str(author["id"]))
            message = self._message(node, room_id, str(entry.get("subject") or ""), owner_id, members)
            if message is not None:
                records.append(message)
                self._note_retry(story_id, room_id, str(entry.get("subject") or ""), members)
        yield Page(records, cursor=snapshot())
        self._cleanup_downloads()

    def _backfill(self, owner_id: str) -> Iterator[Page]:
        """Promotion backfill (``context.refetch``): the stories of people just made
        contractors whose files were recorded, not downloaded. Each story is read again by
        id (one request: its file links are fresh), its files fetched by their links, and
        the message comes back as stored, marked ``backfill`` so its files enter the
        review queue with their own dates. The pages carry no cursor."""
        self.context.log.info("%s: reading %d earlier message(s) again for the files of "
                              "people just made contractors", self.context.source,
                              len(self.context.refetch))
        records: list[Record] = []
        for locator in self.context.refetch:
            stored = locator.get("stored")
            room_id, story_id = locator.get("room_id"), (stored or {}).get("remote_id")
            if not isinstance(room_id, str) or not isinstance(story_id, str) or not room_id:
                continue
            if self.context.should_stop():
                break
            node = self.graphql("RetainerRoomStory", {"roomId": room_id, "storyId": story_id},
                                partial=True).get("roomStory")
            if not isinstance(node, dict):
                continue  # the story is gone: nothing left to fetch
            members = {  # the room's other members, as the message stored them
                str(r["address"]): {"id": str(r["address"]), "name": str(r.get("name") or "")}
                for r in (stored or {}).get("recipients") or ()
                if isinstance(r, dict) and r.get("address")}
            subject = str((stored or {}).get("subject") or "")
            message = self._message(node, room_id, subject, owner_id, members)
            if message is None:
                continue
            records.append(dataclasses.replace(message, extra={**message.extra, "backfill": True}))
            self._note_retry(story_id, room_id, subject, members)
            if len(records) >= self.settings.page_size:
                yield Page(records, cursor=None)
                self._cleanup_downloads()
                records = []
        if records:
            yield Page(records, cursor=None)
            self._cleanup_downloads()

    def _cleanup_downloads(self) -> None:
        """Temp files of pages the host has stored (it copies them into the store)."""
        for path in self._downloads:
            path.unlink(missing_ok=True)
        self._downloads.clear()

    # -- contracts, offers, milestones ---------------------------------------------------------

    def _contracts_for(self, rooms: list[Mapping[str, Any]], owner_id: str) -> Iterator[Record]:
        by_contract: dict[str, Mapping[str, Any]] = {}
        offers: list[tuple[str, Mapping[str, Any]]] = []
        for room in rooms:
            contract_id = room.get("contractId")
            if contract_id:
                by_contract.setdefault(str(contract_id), room)
            else:
                offers.extend((str(o), room) for o in room.get("offerIds") or [] if o)
        ids = list(by_contract)
        for start in range(0, len(ids), queries.CONTRACT_BATCH):
            batch = ids[start: start + queries.CONTRACT_BATCH]
            try:
                data = self.graphql("RetainerContracts", {"ids": batch},
                                    partial=True).get("contractList") or {}
            except (AuthError, TransientError):
                raise
            except SourceError as exc:
                self._warn(f"contracts were not read ({exc}); messages and files still sync")
                continue
            for contract in data.get("contracts") or []:
                if not isinstance(contract, dict) or not contract.get("id"):
                    continue
                room = by_contract.get(str(contract["id"])) or {}
                yield from self._contract_records(contract, room, owner_id)
        for offer_id, room in offers:
            try:
                offer = self.graphql("RetainerOffer", {"id": offer_id}, partial=True).get("offer")
            except (AuthError, TransientError):
                raise
            except SourceError as exc:
                self._warn(f"offer {offer_id} was not read ({exc}); messages and files still sync")
                continue
            if isinstance(offer, dict) and offer.get("id"):
                record = self._offer_record(offer, room, owner_id)
                if record is not None:
                    yield record

    def _room_profile(self, room: Mapping[str, Any], user_id: str) -> str:
        for member in room.get("roomUsers") or []:
            user = member.get("user") if isinstance(member, dict) else None
            if isinstance(user, dict) and str(user.get("id")) == user_id:
                return str(user.get("publicUrl") or "")
        return ""

    def _contract_records(
        self, contract: Mapping[str, Any], room: Mapping[str, Any], owner_id: str
    ) -> Iterator[Record]:
        freelancer = contract.get("freelancer") or {}
        fid = str(freelancer.get("id") or "")
        contractor = Identity(PLATFORM, fid, clean_line(freelancer.get("name")),
                              profile_url=self._room_profile(room, fid))
        if fid:
            self._freelancers.add(fid)
        terms = contract.get("terms") or {}
        hourly = [t for t in terms.get("hourlyTerms") or [] if isinstance(t, dict)]
        fixed = [t for t in terms.get("fixedPriceTerms") or [] if isinstance(t, dict)]
        rate, currency = _money(hourly[-1].get("hourlyRate")) if hourly else (None, "")
        budget: float | None = None
        for term in fixed:
            amount, cur = _money(term.get("fixedAmount"))
            if amount is not None:
                budget = (budget or 0.0) + amount
                currency = currency or cur
        room_id = str(room.get("id") or "")
        milestones: list[dict[str, Any]] = []
        submissions: list[Submission] = []
        spent = 0.0
        for term in fixed:
            for milestone in term.get("milestones") or []:
                if not isinstance(milestone, dict):
                    continue
                deposit, cur = _money(milestone.get("depositAmount"))
                currency = currency or cur
                state = str(milestone.get("state") or "")
                if state in PAID_STATES:
                    paid, _ = _money(milestone.get("paid"))
                    spent += paid if paid else (deposit or 0.0)
                milestones.append({
                    "id": str(milestone.get("id") or ""),
                    "description": clean_line(milestone.get("description")),
                    "state": state,
                    "sequence": milestone.get("sequenceId"),
                    "due": milestone.get("dueDateTime"),
                    "amount": deposit,
                    "submissions": milestone.get("submissionCount"),
                })
                submissions.extend(
                    self._submissions(milestone, contractor, str(contract["id"]), room_id, currency)
                )
        title = clean_line(contract.get("title"))
        yield Contract(
            remote_id=str(contract["id"]),
            contractor=contractor,
            title=title,
            status=str(contract.get("status") or "").lower(),
            kind="hourly" if hourly else ("fixed" if fixed else str(contract.get("kind") or "").lower()),
            started_at=parse_time(contract.get("startDate")) or parse_time(contract.get("createDate")),
            ended_at=parse_time(contract.get("endDate")),
            rate=rate,
            budget=budget,
            spent=spent if milestones else None,
            currency=currency,
            thread_remote_id=room_id,
            extra={
                "offer_id": contract.get("offerId") or "",
                "upwork_kind": contract.get("kind") or "",
                "term_ids": [str(t.get("id")) for t in hourly + fixed if t.get("id")],
                "modified_at": contract.get("modifyDate") or "",
                "milestones": milestones,
            },
        )
        yield from submissions

    def _submissions(
        self,
        milestone: Mapping[str, Any],
        contractor: Identity,
        contract_id: str,
        room_id: str,
        currency: str,
    ) -> Iterator[Submission]:
        description = clean_line(milestone.get("description")) or "milestone"
        for event in milestone.get("submissionEvents") or []:
            if not isinstance(event, dict):
                continue
            submission = event.get("submission") or {}
            sub_id = str(submission.get("id") or "")
            submitted_at = parse_time(submission.get("createdDateTime"))
            if not sub_id or submitted_at is None:
                continue
            note_text = str((event.get("submissionMessage") or {}).get("message") or "")
            amount, cur = _money(submission.get("amount"))
            review_by = submitted_at + timedelta(days=REVIEW_DAYS)
            yield Submission(
                remote_id=f"submission:{sub_id}",
                submitted_at=submitted_at,
                contractor=contractor,
                under_contract=True,  # a milestone submission is made on a contract
                attachment=Attachment(
                    filename=f"{description}.upwork-submission",
                    content_type="application/x-upwork-submission",
                    remote_id=sub_id,
                    status="delivery_waiting",
                    note=(
                        f"Submitted for milestone “{description}”; review it on Upwork by "
                        f"{review_by:%Y-%m-%d} or it is approved automatically."
                        + (f" Note: {note_text}" if note_text else "")
                    ),
                ),
                title=description,
                thread_remote_id=room_id,
                contract_remote_id=contract_id,
                extra={
                    "thread_remote_id": room_id,  # the room feedback is sent to
                    "milestone_id": str(milestone.get("id") or ""),
                    "milestone_state": str(milestone.get("state") or ""),
                    "amount": amount,
                    "currency": cur or currency,
                    "message": note_text,
                    "review_deadline": review_by.isoformat(),
                },
            )

    def _offer_record(
        self, offer: Mapping[str, Any], room: Mapping[str, Any], owner_id: str
    ) -> Contract | None:
        other = next(
            (
                m["user"]
                for m in room.get("roomUsers") or []
                if isinstance(m, dict) and isinstance(m.get("user"), dict)
                and str(m["user"].get("id")) != owner_id
            ),
            None,
        )
        if other is None:
            return None
        contractor = _identity(other)
        self._freelancers.add(contractor.address)
        terms = offer.get("offerTerms") or {}
        rate, currency = _money((terms.get("hourlyTerms") or {}).get("rate"))
        budget, cur = _money((terms.get("fixedPriceTerm") or {}).get("budget"))
        return Contract(
            remote_id=f"offer:{offer['id']}",
            contractor=contractor,
            title=clean_line(offer.get("title")),
            status=f"offer {str(offer.get('state') or '').lower().replace('_', ' ')}".strip(),
            kind="hourly" if rate is not None else "fixed",
            rate=rate,
            budget=budget,
            currency=currency or cur,
            thread_remote_id=str(room.get("id") or ""),
            extra={"offer_id": str(offer["id"]), "offer_type": offer.get("type") or ""},
        )


_EPOCH = datetime.fromtimestamp(0, UTC)


def _identity(user: Mapping[str, Any]) -> Identity:
    return Identity(
        PLATFORM,
        str(user.get("id") or "unknown"),
        clean_line(user.get("name")),
        profile_url=str(user.get("publicUrl") or ""),
    )


def _later(a: str | None, b: str | None) -> str | None:
    if not a:
        return b
    if not b:
        return a
    return b if (parse_time(b) or _EPOCH) > (parse_time(a) or _EPOCH) else a


def _too_large_note(size: int | None, cap: int) -> str:
    mb = 1024 * 1024
    what = f"{size / mb:.1f} MB" if size else "larger than the cap"
    return (f"{what}, over the {cap / mb:.0f} MB attachment cap: not downloaded; "
            "open it on Upwork or raise max_attachment_mb")
