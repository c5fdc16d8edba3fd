"""Sending to an Upwork room (``createRoomStoryV2``): the connector against the sandbox, and
``retainer review changes --send`` through the real command line."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.connector import SourceContext
from agent.errors import AuthError, RateLimited, SourceError, TransientError
from agent.models import Identity, Outgoing
from agent.store import Store
from agent.store import workflow as wf
from plugins.upwork.sandbox import DEFAULT_CLIENT_SECRET, Room, Sandbox, start_sandbox
from tests.plugins.upwork.test_cli import SECRET_ENV, run, state_dir, write_config
from tests.plugins.upwork.util import SOURCE, connector, make_context, run_sync

SEND = "RetainerSendStory"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with start_sandbox(seed=21, threads=4, messages_per_thread=6) as box:
        yield box


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, DEFAULT_CLIENT_SECRET)


def contract_room(sandbox: Sandbox) -> Room:
    return next(r for r in sandbox.rooms.values() if r.contract_id)


def outgoing_to(sandbox: Sandbox, room: Room, text: str = "Please make the logo bigger.") -> Outgoing:
    contractor = next(u for u in room.user_ids if u != sandbox.owner.id)
    return Outgoing(to=Identity("upwork", contractor), text=text, subject="Re: work",
                    thread_remote_id=room.id)


def authorized_context(sandbox: Sandbox, tmp_path: Path) -> SourceContext:
    context = make_context(tmp_path)
    sandbox.authorize_source(context.state_dir)
    return context


def send(sandbox: Sandbox, tmp_path: Path, outgoing: Outgoing, **settings: Any) -> str:
    conn = connector(sandbox, tmp_path, context=authorized_context(sandbox, tmp_path), **settings)
    try:
        return conn.send(outgoing)
    finally:
        conn.close()


def test_send_posts_one_story_to_the_room_and_the_next_sync_reads_it_back_once(
        sandbox: Sandbox, tmp_path: Path) -> None:
    context = authorized_context(sandbox, tmp_path)
    first = run_sync(connector(sandbox, tmp_path, context=context))
    room = contract_room(sandbox)
    text = "Please make the logo bigger.\n\nAnd a darker green, thanks."
    conn = connector(sandbox, tmp_path, context=context)
    story_id = conn.send(outgoing_to(sandbox, room, text))
    conn.close()
    assert [(s.id, s.room_id, s.user_id, s.message) for s in sandbox.posted] == [
        (story_id, room.id, sandbox.owner.id, text)]
    (hit,) = sandbox.graphql_hits(SEND)
    assert hit.status == 200 and hit.variables == {"input": {"roomId": room.id, "message": text}}
    assert room.stories[-1].id == story_id  # it is the room's latest story now

    second = run_sync(connector(sandbox, tmp_path, context=context), first.cursor)
    mine = [m for m in second.messages if m.remote_id == story_id]
    assert len(mine) == 1
    assert mine[0].direction == "out" and mine[0].text == text
    assert mine[0].thread_remote_id == room.id and mine[0].sender.address == sandbox.owner.id
    assert {m.thread_remote_id for m in second.messages} == {room.id}  # only that room re-read
    third = run_sync(connector(sandbox, tmp_path, context=context), second.cursor)
    assert third.messages == []


def test_milestone_submissions_carry_their_room_for_replies(sandbox: Sandbox, tmp_path: Path) -> None:
    result = run_sync(connector(sandbox, tmp_path, context=authorized_context(sandbox, tmp_path)))
    rooms = {r.contract_id: r.id for r in sandbox.rooms.values() if r.contract_id}
    assert result.submissions
    for sub in result.submissions:
        assert sub.thread_remote_id == sub.extra["thread_remote_id"] == rooms[sub.contract_remote_id]


def test_revoked_token_is_an_auth_error_and_nothing_is_posted(sandbox: Sandbox, tmp_path: Path) -> None:
    context = authorized_context(sandbox, tmp_path)
    sandbox.revoke_all()
    conn = connector(sandbox, tmp_path, context=context)
    with pytest.raises(AuthError) as caught:
        conn.send(outgoing_to(sandbox, contract_room(sandbox)))
    conn.close()
    assert "retainer auth up" in str(caught.value)
    assert "not sent" in str(caught.value)
    assert "oauth2v2_" not in str(caught.value)
    assert sandbox.posted == []


def test_errors_inside_http_200_are_source_errors(sandbox: Sandbox, tmp_path: Path) -> None:
    room = contract_room(sandbox)
    sandbox.inject("graphql_error", operation=SEND, message="Room is archived",
                   classification="DataFetchingException")
    with pytest.raises(SourceError, match=r"did not post the message to room .*Room is archived"):
        send(sandbox, tmp_path, outgoing_to(sandbox, room))
    with pytest.raises(SourceError, match=r"Room room_nope not found"):
        send(sandbox, tmp_path, Outgoing(to=Identity("upwork", "1"), text="hi",
                                         thread_remote_id="room_nope"))
    sandbox.can_write = False
    with pytest.raises(SourceError, match=r"messages write scope.*retainer auth up"):
        send(sandbox, tmp_path, outgoing_to(sandbox, room))
    assert sandbox.posted == []
    assert all(h.status == 200 for h in sandbox.graphql_hits(SEND))


def test_a_timeout_is_not_retried_and_says_it_may_have_been_sent(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.inject("hang", operation=SEND, seconds=2.0)
    with pytest.raises(TransientError, match=r"may or may not have been posted") as caught:
        send(sandbox, tmp_path, outgoing_to(sandbox, contract_room(sandbox)), timeout=0.5,
             max_retries=3)
    assert not isinstance(caught.value, RateLimited)
    assert len(sandbox.graphql_hits(SEND)) == 1


def test_a_5xx_is_not_retried(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.inject("status", operation=SEND, status=502)
    with pytest.raises(TransientError, match=r"HTTP 502.*check the room on Upwork"):
        send(sandbox, tmp_path, outgoing_to(sandbox, contract_room(sandbox)), max_retries=3)
    assert len(sandbox.graphql_hits(SEND)) == 1 and sandbox.posted == []


def test_a_429_is_waited_out_and_sent_once(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.inject("status", operation=SEND, status=429, retry_after="0")
    story_id = send(sandbox, tmp_path, outgoing_to(sandbox, contract_room(sandbox)))
    assert [h.status for h in sandbox.graphql_hits(SEND)] == [429, 200]
    assert [s.id for s in sandbox.posted] == [story_id]


def test_an_expired_access_token_is_refreshed_and_the_story_sent_once(
        sandbox: Sandbox, tmp_path: Path) -> None:
    context = authorized_context(sandbox, tmp_path)
    sandbox.expire_access_tokens()  # the local expiry still says it is valid: the server 401s
    conn = connector(sandbox, tmp_path, context=context)
    story_id = conn.send(outgoing_to(sandbox, contract_room(sandbox)))
    conn.close()
    assert [h.status for h in sandbox.graphql_hits(SEND)] == [401, 200]
    assert [s.id for s in sandbox.posted] == [story_id]


def test_a_refused_connection_is_retried_then_says_nothing_was_sent(sandbox: Sandbox,
                                                                     tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientError, match=r"connection refused.*was not sent"):
        send(sandbox, tmp_path, outgoing_to(sandbox, contract_room(sandbox)),
             api_url=f"http://127.0.0.1:{port}/graphql")


def test_no_room_or_no_text_is_refused_before_any_request(sandbox: Sandbox, tmp_path: Path) -> None:
    room = contract_room(sandbox)
    with pytest.raises(SourceError, match=r"no Upwork room.*retainer sync up"):
        send(sandbox, tmp_path, Outgoing(to=Identity("upwork", "1", "Maria S."), text="hi"))
    with pytest.raises(SourceError, match=r"empty"):
        send(sandbox, tmp_path, outgoing_to(sandbox, room, "  \n"))
    assert sandbox.graphql_hits(SEND) == []


# -- through the command line -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["submission", "attachment"])
def test_review_changes_send_posts_the_feedback_to_the_room(sandbox: Sandbox, tmp_path: Path,
                                                            kind: str) -> None:
    config = write_config(tmp_path, sandbox.base_url)
    sandbox.authorize_source(state_dir(tmp_path))
    room = contract_room(sandbox)
    sandbox.add_story(room.id, "Here is the new version.", attachments=[("v2.pdf", 900)])
    run(config, "sync", SOURCE)
    deliverables = json.loads(run(config, "deliverables", "--json").stdout)
    if kind == "submission":
        rooms = {r.contract_id: r.id for r in sandbox.rooms.values() if r.contract_id}
        target = next(d for d in deliverables if d["status"] == "delivery_waiting")
        room_id = rooms[target["extra"]["contract_remote_id"]]
    else:
        target = next(d for d in deliverables if d["filename"] == "v2.pdf")
        room_id = room.id
    feedback = "The header overlaps the logo; please fix it."
    result = run(config, "review", "changes", target["id"], "--rating", "2", "--feedback",
                 feedback, "--send", "--yes")
    assert "changes requested, 2/5" in result.output and "feedback sent to upwork:" in result.output

    (story,) = sandbox.posted
    assert story.room_id == room_id and story.user_id == sandbox.owner.id
    assert story.message is not None and feedback in story.message
    assert "needs changes (2/5)" in story.message
    assert len(sandbox.graphql_hits(SEND)) == 1

    store = Store(tmp_path / "data")
    doc = store.deliverable(target["id"])
    assert doc["review_status"] == "changes_requested"
    assert [s["remote_id"] for s in doc["review"]["sent"]] == [story.id]
    (sent,) = wf.outbox(store)
    assert sent["remote_id"] == story.id and sent["source"] == SOURCE
    assert sent["to"] == target["identity"]

    run(config, "sync", SOURCE)  # the story comes back once, as the owner's
    messages = json.loads(run(config, "messages", "--json").stdout)
    mine = [m for m in messages if m["remote_id"] == story.id]
    assert len(mine) == 1 and mine[0]["direction"] == "out"
    assert mine[0]["thread_remote_id"] == room_id
    assert len(messages) == sandbox.story_count()


def test_instructions_send_posts_to_the_contractors_latest_room(sandbox: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, sandbox.base_url)
    sandbox.authorize_source(state_dir(tmp_path))
    room = contract_room(sandbox)
    contractor = next(u for u in room.user_ids if u != sandbox.owner.id)
    run(config, "sync", SOURCE)
    (who,) = [c for c in json.loads(run(config, "contractors", "--json").stdout)
              if c["name"] == sandbox.users[contractor].name]
    run(config, "instructions", "add", "brief", "--text", "Hi {{first_name}}, next: {{task}}.")
    saved = json.loads(run(config, "instructions", "send", "brief", "--to", who["id"], "--task",
                           "the mobile version", "--yes", "--json").stdout)
    (story,) = sandbox.posted
    assert [r.id for r in sandbox.rooms.values() if contractor in r.user_ids] == [room.id]
    assert story.room_id == room.id and story.user_id == sandbox.owner.id
    assert story.message == f"Hi {sandbox.users[contractor].first}, next: the mobile version."
    assert saved["remote_id"] == story.id and saved["source"] == SOURCE
