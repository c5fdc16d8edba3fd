"""The Upwork connector against the sandbox: syncs, paging, tokens, faults, attachments."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import AuthError, SourceError, TransientError
from plugins.upwork.connector import UpworkConnector
from plugins.upwork.oauth import TOKEN_FILE
from plugins.upwork.sandbox import Sandbox, iso, start_sandbox
from tests.plugins.upwork.util import connector, ids, make_context, run_sync

OPS = ("RetainerViewer", "RetainerRoomList", "RetainerRoomStories", "RetainerContracts", "RetainerOffer")


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with start_sandbox(seed=7, threads=8, messages_per_thread=12) as box:
        yield box


@pytest.fixture
def authorized(sandbox: Sandbox, tmp_path: Path) -> Sandbox:
    sandbox.authorize_source(make_context(tmp_path).state_dir)
    return sandbox


def op_counts(sandbox: Sandbox) -> dict[str, int]:
    return {op: len(sandbox.graphql_hits(op)) for op in OPS}


def test_first_sync_reads_everything(authorized: Sandbox, tmp_path: Path) -> None:
    sandbox = authorized
    conn = connector(sandbox, tmp_path)
    result = run_sync(conn)

    stories = {s.id: s for r in sandbox.rooms.values() for s in r.stories}
    assert sorted(ids(result.messages)) == sorted(stories)
    assert len(set(ids(result.messages))) == len(stories)
    owner = sandbox.owner.id
    for message in result.messages:
        story = stories[message.remote_id]
        assert message.thread_remote_id == story.room_id
        assert message.sent_at.isoformat().startswith(story.created.isoformat()[:19])
        assert message.sent_at.tzinfo is not None
        user = sandbox.users[story.user_id]
        assert message.sender.platform == "upwork" and message.sender.address == user.id
        assert message.sender.name == user.name and message.sender.profile_url == user.public_url
        assert message.direction == ("out" if story.user_id == owner else "in")
        assert message.text == (story.message or "")
        assert message.subject == sandbox.rooms[story.room_id].name
    assert any(m.text == "" and m.attachments for m in result.messages)  # attachment-only stories

    # attachments from contractors were downloaded, bytes intact
    downloaded = [a for m in result.messages for a in m.attachments]
    assert downloaded and {a.status for a in downloaded} == {"stored"}
    for att in downloaded:
        expected = b"".join(sandbox.attachments[att.remote_id].content())
        assert result.attachment_bytes[att.remote_id] == expected
        assert att.filename == sandbox.attachments[att.remote_id].filename
    assert not list((tmp_path / "tmp").iterdir())  # temp downloads cleaned up after each page

    # contracts, offers, milestone submissions
    contract_ids = {r.contract_id for r in sandbox.rooms.values() if r.contract_id}
    assert {c.remote_id for c in result.contracts if not c.remote_id.startswith("offer:")} == contract_ids
    offers = [c for c in result.contracts if c.remote_id.startswith("offer:")]
    assert len(offers) == len(sandbox.offers) == 1
    assert offers[0].status == "offer pending vendor acceptance"
    for contract in result.contracts:
        room = next(r for r in sandbox.rooms.values() if r.id == contract.thread_remote_id)
        assert contract.contractor.address in room.user_ids and contract.contractor.address != owner
    hourly = [c for c in result.contracts if c.kind == "hourly"]
    assert hourly and all(c.rate and c.currency == "USD" for c in hourly)
    expected_subs = {f"submission:{s.id}" for c in sandbox.contracts.values()
                     for m in c.milestones for s in m.submissions}
    assert set(ids(result.submissions)) == expected_subs
    sub = result.submissions[0]
    assert sub.attachment.status == "delivery_waiting" and "review it on Upwork by" in sub.attachment.note
    assert sub.contract_remote_id in contract_ids and sub.thread_remote_id in sandbox.rooms
    assert result.cursor["owner_id"] == owner and len(result.cursor["rooms"]) == len(sandbox.rooms)

    # the request count is the minimum the paging allows (see the connector docstring)
    rooms = len(sandbox.rooms)
    counts = op_counts(sandbox)
    assert counts == {
        "RetainerViewer": 1,
        "RetainerRoomList": 1,
        "RetainerRoomStories": rooms,
        "RetainerContracts": math.ceil(len(contract_ids) / 10),
        "RetainerOffer": 1,
    }
    assert conn.requests_made == sum(counts.values()) + len(downloaded)


def test_noop_sync_costs_one_request(authorized: Sandbox, tmp_path: Path) -> None:
    sandbox = authorized
    first = run_sync(connector(sandbox, tmp_path))
    before = len(sandbox.hits)
    conn = connector(sandbox, tmp_path)
    again = run_sync(conn, first.cursor)
    assert again.records == []
    assert conn.requests_made == 1
    new_hits = sandbox.hits[before:]
    assert [h.operation for h in new_hits] == ["RetainerRoomList"]
    assert new_hits[0].variables["filter"]["activeSince_eq"] == first.cursor["watermark"]
    assert again.cursor == first.cursor


def test_incremental_sync_reads_only_whats_new(authorized: Sandbox, tmp_path: Path) -> None:
    sandbox = authorized
    first = run_sync(connector(sandbox, tmp_path))
    rooms = list(sandbox.rooms.values())
    new = [sandbox.add_story(rooms[1].id, "v2 is up"), sandbox.add_story(rooms[1].id, None,
           attachments=[("v2.pdf", 5000)]), sandbox.add_story(rooms[5].id, "Sounds good",
           user_id=sandbox.owner.id)]
    added_room = sandbox.add_room(messages=2)
    before = len(sandbox.hits)
    conn = connector(sandbox, tmp_path)
    second = run_sync(conn, first.cursor)
    expected = {s.id for s in new} | {s.id for s in added_room.stories}
    assert set(ids(second.messages)) == expected
    assert len(second.messages) == len(expected)
    ops = [h.operation for h in sandbox.hits[before:] if h.operation]
    # 1 room list, contracts of the 3 changed rooms in one call, stories of each changed room
    assert sorted(ops) == sorted(["RetainerRoomList", "RetainerContracts"] + ["RetainerRoomStories"] * 3)
    assert next(m for m in second.messages if m.remote_id == new[2].id).direction == "out"
    third = run_sync(connector(sandbox, tmp_path), second.cursor)
    assert third.records == []


def test_paging_over_several_pages(tmp_path: Path) -> None:
    with start_sandbox(seed=2, threads=7, messages_per_thread=9, offer_every=0) as sandbox:
        sandbox.authorize_source(make_context(tmp_path).state_dir)
        conn = connector(sandbox, tmp_path, page_size=2)
        result = run_sync(conn)
        assert len(ids(result.messages)) == len(set(ids(result.messages))) == 7 * 9
        counts = op_counts(sandbox)
        assert counts["RetainerRoomList"] == math.ceil(7 / 2)
        assert counts["RetainerRoomStories"] == 7 * math.ceil(9 / 2)
        # contracts are fetched per room-list page: one call per page here
        assert counts["RetainerContracts"] == math.ceil(7 / 2)
        pages = [h.variables["pagination"] for h in sandbox.graphql_hits("RetainerRoomList")]
        assert "after" not in pages[0] and all("after" in p for p in pages[1:])
        # incremental paging inside one room: 5 new stories at page size 2 -> 3 pages
        room = next(iter(sandbox.rooms.values()))
        fresh = [sandbox.add_story(room.id, f"update {n}") for n in range(5)]
        before = len(sandbox.graphql_hits("RetainerRoomStories"))
        second = run_sync(connector(sandbox, tmp_path, page_size=2), result.cursor)
        assert sorted(ids(second.messages)) == sorted(s.id for s in fresh)
        # the range starts at the last story seen, which is returned again (and skipped)
        assert len(sandbox.graphql_hits("RetainerRoomStories")) - before == math.ceil(6 / 2)


def test_max_pages_resumes_next_sync(authorized: Sandbox, tmp_path: Path) -> None:
    sandbox = authorized
    first = run_sync(connector(sandbox, tmp_path, page_size=3, max_pages=1))
    assert len({m.thread_remote_id for m in first.messages}) == 3
    assert first.cursor["watermark"] is None  # the pass was not complete
    second = run_sync(connector(sandbox, tmp_path, page_size=3, max_pages=2), first.cursor)
    third = run_sync(connector(sandbox, tmp_path, page_size=3), second.cursor)
    everything = ids(first.messages) + ids(second.messages) + ids(third.messages)
    assert sorted(everything) == sorted(s.id for r in sandbox.rooms.values() for s in r.stories)
    assert third.cursor["watermark"]


def test_story_posted_during_a_sync_is_not_skipped(authorized: Sandbox, tmp_path: Path) -> None:
    sandbox = authorized
    rooms = sorted(sandbox.rooms.values(), key=lambda r: r.activity(), reverse=True)
    conn = connector(sandbox, tmp_path)
    records = []
    cursor: dict = {}
    late = None
    for page in conn.fetch({}):
        records.extend(page.records)
        if page.cursor is not None:
            cursor = dict(page.cursor)
            if late is None and rooms[0].id in cursor["rooms"]:
                # the newest room is done; its contractor writes again before the pass ends
                late = sandbox.add_story(rooms[0].id, "one more thing")
    conn.close()
    assert late is not None and late.id not in ids(records)
    second = run_sync(connector(sandbox, tmp_path), cursor)
    assert ids(second.messages) == [late.id]


# -- tokens ----------------------------------------------------------------------------------


def read_tokens(tmp_path: Path) -> dict:
    path = make_context(tmp_path).state_dir / TOKEN_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    return json.loads(path.read_text())


def test_refresh_token_rotation_survives_a_restart(tmp_path: Path) -> None:
    with start_sandbox(seed=3, threads=3, messages_per_thread=3, rotation_grace=0) as sandbox:
        sandbox.authorize_source(make_context(tmp_path).state_dir)
        first_tokens = read_tokens(tmp_path)
        first = run_sync(connector(sandbox, tmp_path))
        sandbox.add_story(next(iter(sandbox.rooms)), "after expiry")

        sandbox.expire_access_tokens()  # server side: the next call gets a 401
        conn = connector(sandbox, tmp_path)
        second = run_sync(conn, first.cursor)
        assert len(second.messages) == 1 and conn.tokens.refreshes == 1
        rotated = read_tokens(tmp_path)
        assert rotated["refresh_token"] != first_tokens["refresh_token"]
        assert rotated["access_token"] != first_tokens["access_token"]
        assert first_tokens["refresh_token"] not in sandbox.refresh_tokens  # the old one is dead

        # "restart": a new connector reads the rotated token from disk and refreshes again
        sandbox.expire_access_tokens()
        sandbox.add_story(next(iter(sandbox.rooms)), "after restart")
        third = run_sync(connector(sandbox, tmp_path), second.cursor)
        assert len(third.messages) == 1
        assert read_tokens(tmp_path)["refresh_token"] != rotated["refresh_token"]
        token_hits = [h for h in sandbox.hits if h.path.endswith("/oauth2/token")]
        assert [h.status for h in token_hits] == [200, 200]


def test_access_token_refreshed_before_expiry(authorized: Sandbox, tmp_path: Path) -> None:
    class Tomorrow(UpworkConnector):
        wall_clock = staticmethod(lambda: time.time() + 86400 - 60)

    sandbox = authorized
    run_sync(connector(sandbox, tmp_path, cls=Tomorrow))
    statuses = [h.status for h in sandbox.hits]
    assert 401 not in statuses  # refreshed ahead of time, never sent an expiring token
    assert sandbox.hits[0].path.endswith("/oauth2/token")


def test_not_signed_in_names_the_auth_command(sandbox: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(AuthError, match=r"retainer auth up"):
        run_sync(connector(sandbox, tmp_path))
    assert sandbox.hits == []


def test_revoked_mid_sync_loses_nothing(authorized: Sandbox, tmp_path: Path) -> None:
    sandbox = authorized
    sandbox.inject("revoke", operation="RetainerRoomStories", skip=3)
    broken = run_sync(connector(sandbox, tmp_path), raise_errors=False)
    assert isinstance(broken.error, AuthError)
    assert "retainer auth up" in str(broken.error)
    assert "oauth2v2_" not in str(broken.error)
    # what was committed before the error is kept; a new sign-in resumes from the cursor
    done_rooms = set(broken.cursor.get("rooms", {}))
    assert len(done_rooms) == 3
    sandbox.authorize_source(make_context(tmp_path).state_dir)
    resumed = run_sync(connector(sandbox, tmp_path), broken.cursor)
    committed = [m for m in broken.messages if m.thread_remote_id in done_rooms]
    everything = set(ids(committed)) | set(ids(resumed.messages))
    assert everything == {s.id for r in sandbox.rooms.values() for s in r.stories}
    assert not set(ids(committed)) & set(ids(resumed.messages))  # nothing twice


# -- faults ----------------------------------------------------------------------------------


def test_429_storm_stays_under_the_limit_and_completes(tmp_path: Path) -> None:
    # server allows 5/s; client is set to 8/s, so it hits 429s and must obey Retry-After
    with start_sandbox(seed=4, threads=6, messages_per_thread=4, rate_limit=5, offer_every=0,
                       attachment_every=0) as sandbox:
        sandbox.authorize_source(make_context(tmp_path).state_dir)
        sandbox.inject("status", status=429, retry_after="1", operation="RetainerRoomStories", times=3)
        conn = connector(sandbox, tmp_path, page_size=2)
        result = run_sync(conn)
        assert len(result.messages) == 24
        statuses = [h.status for h in sandbox.hits]
        assert statuses.count(429) >= 3
        assert_rate(sandbox, 8.0)  # the client's own limit, retries included
        # after each 429 the client waited out Retry-After before its next request
        for before, after in zip(sandbox.hits, sandbox.hits[1:], strict=False):
            if before.status == 429:
                assert after.at - before.at >= 0.95


def assert_rate(sandbox: Sandbox, rate: float) -> None:
    """Never more than Upwork's 10 requests in any second at the server (arrival times jitter
    by a few ms), and on average no faster than the client's own ``rate``."""
    assert sandbox.max_in_window(1.0) <= 10
    times = sorted(h.at for h in sandbox.hits)
    assert (len(times) - 1) / (times[-1] - times[0]) <= rate * 1.03


def test_default_rate_stays_under_ten_per_second(tmp_path: Path) -> None:
    with start_sandbox(seed=5, threads=12, messages_per_thread=3, attachment_every=0) as sandbox:
        sandbox.authorize_source(make_context(tmp_path).state_dir)
        run_sync(connector(sandbox, tmp_path, page_size=3))
        assert len(sandbox.hits) >= 20
        assert_rate(sandbox, 8.0)


def test_long_retry_after_raises_rate_limited(authorized: Sandbox, tmp_path: Path) -> None:
    from agent.errors import RateLimited

    authorized.inject("status", status=429, retry_after="3600", times=None)
    with pytest.raises(RateLimited) as info:
        run_sync(connector(authorized, tmp_path))
    assert info.value.retry_after == 3600


def test_5xx_retried_then_completes(authorized: Sandbox, tmp_path: Path) -> None:
    sandbox = authorized
    sandbox.inject("status", status=503, operation="RetainerRoomStories", times=2)
    sandbox.inject("status", status=502, operation="RetainerRoomList", times=1)
    result = run_sync(connector(sandbox, tmp_path))
    assert len(result.messages) == sandbox.story_count()
    assert [h.status for h in sandbox.hits].count(503) == 2


def test_5xx_forever_gives_a_clear_transient_error(authorized: Sandbox, tmp_path: Path) -> None:
    authorized.inject("status", status=500, operation="RetainerRoomList", times=None)
    conn = connector(authorized, tmp_path, max_retries=2)
    with pytest.raises(TransientError) as info:
        run_sync(conn)
    assert "HTTP 500" in str(info.value) and "tried 3 times" in str(info.value)
    assert "/graphql" in str(info.value)
    assert len(authorized.graphql_hits("RetainerRoomList")) == 3


def test_timeouts_retried_then_clear_error(authorized: Sandbox, tmp_path: Path) -> None:
    sandbox = authorized
    sandbox.inject("hang", seconds=2, operation="RetainerRoomStories", times=1)
    result = run_sync(connector(sandbox, tmp_path, timeout=0.3))
    assert len(result.messages) == sandbox.story_count()
    sandbox.inject("hang", seconds=2, operation="RetainerRoomList", times=None)
    with pytest.raises(TransientError, match="timed out"):
        run_sync(connector(sandbox, tmp_path, timeout=0.3, max_retries=1), result.cursor)


def test_malformed_json_is_a_clear_error(authorized: Sandbox, tmp_path: Path) -> None:
    authorized.inject("malformed", operation="RetainerRoomList", times=None)
    with pytest.raises(SourceError) as info:
        run_sync(connector(authorized, tmp_path))
    assert "malformed JSON" in str(info.value) and "/graphql" in str(info.value)


def test_http_200_validation_error_means_schema_changed(authorized: Sandbox, tmp_path: Path) -> None:
    authorized.inject(
        "graphql_error", operation="RetainerRoomStories", classification="ValidationError",
        message="Validation error (FieldUndefined@[roomStories/edges/node/message]) : Field 'message' in "
                "type 'RoomStory' is undefined",
    )
    with pytest.raises(SourceError, match="schema has changed"):
        run_sync(connector(authorized, tmp_path))


def test_http_200_execution_error_is_an_error(authorized: Sandbox, tmp_path: Path) -> None:
    authorized.inject("graphql_error", operation="RetainerRoomList", classification="DataFetchingException",
                      message="User  has no access of any team(s) for [read_rooms] action(s)")
    with pytest.raises(SourceError, match="denied"):
        run_sync(connector(authorized, tmp_path))


def test_sandbox_rejects_unknown_fields_like_upwork(authorized: Sandbox, tmp_path: Path) -> None:
    conn = connector(authorized, tmp_path)
    token = conn.tokens.access_token()
    body = conn.http.request("POST", authorized.api_url, json={
        "query": "query X { roomList { edges { node { id systemStory } } } }"},
        auth_header=lambda: {"Authorization": f"Bearer {token}"})
    assert body["errors"][0]["extensions"]["classification"] == "ValidationError"
    assert "'systemStory' on type 'Room'" in body["errors"][0]["message"]
    assert "data" not in body
    conn.close()


# -- attachments -------------------------------------------------------------------------------


def test_attachment_over_the_cap_is_recorded_not_downloaded(authorized: Sandbox, tmp_path: Path) -> None:
    sandbox = authorized
    first = run_sync(connector(sandbox, tmp_path))
    room = next(r for r in sandbox.rooms.values() if r.contract_id)
    big = sandbox.add_story(room.id, "the raw footage", attachments=[("footage.mov", 3_000_000)])
    liar = sandbox.add_story(room.id, "zip", attachments=[("assets.zip", 3_000_000)], declared_size=1000)
    small = sandbox.add_story(room.id, "notes", attachments=[("notes.pdf", 2000)])
    before = len(sandbox.hits)
    conn = connector(sandbox, tmp_path, context=make_context(tmp_path, max_attachment_bytes=1_000_000))
    result = run_sync(conn, first.cursor)
    by_story = {m.remote_id: m for m in result.messages}
    big_att = by_story[big.id].attachments[0]
    assert big_att.status == "too_large" and big_att.size == 3_000_000 and big_att.path is None
    assert "over the 1 MB attachment cap" in big_att.note
    liar_att = by_story[liar.id].attachments[0]
    assert liar_att.status == "too_large" and liar_att.path is None
    assert by_story[small.id].attachments[0].status == "stored"
    downloads = [h.path.rsplit("/", 1)[-1] for h in sandbox.hits[before:] if "/attachments/" in h.path]
    assert big.attachments[0].id not in downloads  # never requested: the metadata said too big
    assert liar.attachments[0].id in downloads  # requested, aborted at the cap
    assert not list((tmp_path / "tmp").iterdir())  # no partial file left behind


def test_owner_attachments_are_not_downloaded(authorized: Sandbox, tmp_path: Path) -> None:
    sandbox = authorized
    room = next(iter(sandbox.rooms.values()))
    mine = sandbox.add_story(room.id, "brief", user_id=sandbox.owner.id, attachments=[("brief.pdf", 500)])
    result = run_sync(connector(sandbox, tmp_path))
    message = next(m for m in result.messages if m.remote_id == mine.id)
    assert message.direction == "out" and message.attachments[0].status == "not_downloaded"


def test_sandbox_times_follow_an_injected_clock(tmp_path: Path) -> None:
    from plugins.upwork.sandbox import ManualClock

    clock = ManualClock()
    with start_sandbox(seed=1, threads=2, messages_per_thread=2, clock=clock) as sandbox:
        sandbox.authorize_source(make_context(tmp_path).state_dir)
        first = run_sync(connector(sandbox, tmp_path))
        clock.advance(3600)
        story = sandbox.add_story(next(iter(sandbox.rooms)), "an hour later")
        assert iso(story.created) == iso(clock())
        second = run_sync(connector(sandbox, tmp_path), first.cursor)
        assert [m.sent_at for m in second.messages] == [clock()]
        clock.advance(86400 + 1)  # access tokens expire on the sandbox clock
        third = run_sync(connector(sandbox, tmp_path), second.cursor)
        assert third.records == [] and 401 in [h.status for h in sandbox.hits]
