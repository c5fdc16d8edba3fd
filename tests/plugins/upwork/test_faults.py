"""Faults Upwork really produces, through the real connector against the sandbox's knobs.

Each test names the fault and checks what the owner ends up with: one bad file never
stops the source, partial GraphQL errors are partial, names cannot drive the terminal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.models import Attachment
from plugins.upwork.sandbox import CDN_PATH, Sandbox, start_sandbox
from tests.plugins.upwork.util import Sync, connector, make_context, run_sync


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with start_sandbox(seed=5, threads=4, messages_per_thread=12, attachment_every=1) as box:
        box.authorize_source(make_context(tmp_path).state_dir)
        yield box


def attachments(result: Sync) -> dict[str, Attachment]:
    return {a.remote_id: a for m in result.messages for a in m.attachments}


def contractor_files(sandbox: Sandbox) -> list[str]:
    owner = sandbox.owner.id
    return [a.id for room in sandbox.rooms.values() for s in room.stories if s.user_id != owner
            for a in s.attachments]


def test_one_bad_file_never_stops_the_source(sandbox: Sandbox, tmp_path: Path) -> None:
    files = contractor_files(sandbox)
    kinds = ["404", "410", "403", "html", "json", "wrong_type", "short", "500", "redirect"]
    assert len(files) > len(kinds)
    fault_of = dict(zip(files, kinds, strict=False))
    sandbox.file_faults.update(fault_of)

    first = run_sync(connector(sandbox, tmp_path, max_retries=0))
    got = attachments(first)
    assert first.error is None and len(first.messages) == sandbox.story_count()
    for att_id, kind in fault_of.items():
        att = got[att_id]
        if kind == "redirect":  # a CDN redirect is followed; the token stays home
            assert att.status == "stored"
            assert first.attachment_bytes[att_id] == b"".join(sandbox.attachments[att_id].content())
            continue
        assert att.status == "unavailable" and att.path is None, kind
        if kind in ("404", "410", "403"):
            assert f"HTTP {kind}" in att.note and "open the room on Upwork" in att.note
            assert "retainer auth" not in att.note
        else:
            assert "tries again at the next sync" in att.note, (kind, att.note)
    assert sandbox.cdn_hits and all(auth == "" for _, auth in sandbox.cdn_hits)
    others = [a for i, a in got.items() if i in files and i not in fault_of]
    assert others and {a.status for a in others} == {"stored"}
    assert not list((tmp_path / "tmp").iterdir())  # no page or half file left behind

    # the passing failures (a page instead of the file, 5xx, short body) are read again by id
    passing = {i for i, k in fault_of.items() if k in ("html", "json", "wrong_type", "short", "500")}
    retry = first.cursor["retry"]
    assert {e["story"] for e in retry} == {s.id for r in sandbox.rooms.values() for s in r.stories
                                            if {a.id for a in s.attachments} & passing}
    sandbox.file_faults.clear()
    second = run_sync(connector(sandbox, tmp_path), first.cursor)
    again = attachments(second)
    assert {i for i in passing} <= set(again)
    assert {again[i].status for i in passing} == {"stored"}
    for att_id in passing:
        assert second.attachment_bytes[att_id] == b"".join(sandbox.attachments[att_id].content())
    assert second.cursor["retry"] == []
    assert len(sandbox.graphql_hits("RetainerRoomStory")) == len(retry)
    third = run_sync(connector(sandbox, tmp_path), second.cursor)
    assert third.records == []  # nothing left to retry, nothing new


def test_a_file_that_keeps_failing_is_given_up_after_five_syncs(sandbox: Sandbox, tmp_path: Path) -> None:
    target = contractor_files(sandbox)[0]
    sandbox.file_faults[target] = "html"
    context = make_context(tmp_path)
    result = run_sync(connector(sandbox, tmp_path, context=context))
    for _ in range(4):
        result = run_sync(connector(sandbox, tmp_path, context=context), result.cursor)
        assert attachments(result)[target].status == "unavailable"
    assert result.cursor["retry"] == []
    assert any("gave up on a file" in w for w in context.warnings)


def test_no_access_to_contracts_is_partial(tmp_path: Path) -> None:
    with start_sandbox(seed=5, threads=7, messages_per_thread=4) as sandbox:
        assert sandbox.offers  # one room has only a pending offer
        sandbox.authorize_source(make_context(tmp_path).state_dir)
        sandbox.denied["contractList"] = "User has no access to contracts of this organization"
        sandbox.denied["offer"] = "Permission denied for offers"
        context = make_context(tmp_path)
        result = run_sync(connector(sandbox, tmp_path, context=context))
        assert result.error is None
        assert len(result.messages) == sandbox.story_count() and result.contracts == []
        assert any("contracts were not read" in w and "no access to contracts" in w
                   for w in context.warnings)
        assert any("offer" in w and "was not read" in w for w in context.warnings)
        sandbox.denied.clear()  # access granted: the next sync of an active room reads them


def test_data_that_comes_with_errors_is_used(sandbox: Sandbox, tmp_path: Path) -> None:
    room = next(iter(sandbox.rooms.values()))
    broken = room.stories[3]
    sandbox.unresolvable_authors.add(broken.id)
    context = make_context(tmp_path)
    result = run_sync(connector(sandbox, tmp_path, context=context))
    got = {m.remote_id for m in result.messages}
    assert broken.id not in got and len(got) == sandbox.story_count() - 1
    assert any("RetainerRoomStories" in w and "error" in w for w in context.warnings)


def test_odd_file_names_are_fetched_by_id_and_stored_safely(sandbox: Sandbox, tmp_path: Path) -> None:
    room = next(iter(sandbox.rooms.values()))
    story = sandbox.add_story(room.id, "names", attachments=[
        ("..", 300), (".", 301), ("../../etc/passwd", 302), ("a\\b/c.pdf", 303), ("x\x1b[2J\x07.pdf", 304)])
    result = run_sync(connector(sandbox, tmp_path))
    (message,) = [m for m in result.messages if m.remote_id == story.id]
    for att, original in zip(message.attachments, story.attachments, strict=True):
        assert att.status == "stored"
        assert result.attachment_bytes[att.remote_id] == b"".join(original.content())
        assert att.filename not in ("", ".", "..") and "/" not in att.filename and "\\" not in att.filename
        assert all(ch.isprintable() for ch in att.filename)


def test_names_cannot_drive_the_terminal(sandbox: Sandbox, tmp_path: Path) -> None:
    room = next(iter(sandbox.rooms.values()))
    contractor = next(u for u in room.user_ids if u != sandbox.owner.id)
    sandbox.users[contractor].name = "\x1b]0;pwned\x07\x1b[2JMaria\u202e S."
    room.name = "Logo \x1b[31mred\x1b[0m job\r\nInjected: yes"
    result = run_sync(connector(sandbox, tmp_path))
    mine = [m for m in result.messages if m.thread_remote_id == room.id]
    assert {m.sender.name for m in mine if m.sender.address == contractor} == {"Maria S."}
    assert {m.subject for m in mine} == {"Logo red job Injected: yes"}
    names = {c.contractor.name for c in result.contracts if c.contractor.address == contractor}
    assert names <= {"Maria S."}


def test_cdn_link_in_metadata_gets_no_token(sandbox: Sandbox, tmp_path: Path) -> None:
    """A download link that names another host directly: fetched without credentials."""
    target = contractor_files(sandbox)[0]
    original = sandbox._attachment_json

    def foreign(att, story):  # type: ignore[no-untyped-def]
        doc = original(att, story)
        if att.id == target:
            for item in doc["metadata"]:
                if item["key"] == "downloadUrl":
                    item["value"] = f"http://localhost:{sandbox.port}{CDN_PATH}{att.id}"
        return doc

    sandbox._attachment_json = foreign  # type: ignore[method-assign]
    result = run_sync(connector(sandbox, tmp_path))
    assert attachments(result)[target].status == "stored"
    assert sandbox.cdn_hits == [(f"{CDN_PATH}{target}", "")]


def test_what_the_owner_sees_in_status_and_the_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plugins.upwork.sandbox import DEFAULT_CLIENT_SECRET
    from tests.plugins.upwork.test_cli import SECRET_ENV, run, state_dir, write_config

    monkeypatch.setenv(SECRET_ENV, DEFAULT_CLIENT_SECRET)
    with start_sandbox(seed=5, threads=7, messages_per_thread=6, attachment_every=1) as sandbox:
        # the sandbox's work is dated before today: all of it enters the queue
        config = write_config(tmp_path, sandbox.base_url, agent_extra="review_since = false")
        sandbox.authorize_source(state_dir(tmp_path))
        contract_rooms = {r.id for r in sandbox.rooms.values() if r.contract_id}
        gone = next(a.id for r in sandbox.rooms.values() if r.id in contract_rooms for s in r.stories
                    if s.user_id != sandbox.owner.id for a in s.attachments)
        sandbox.file_faults[gone] = "404"
        sandbox.denied["offer"] = "Permission denied for offers"
        run(config, "sync")
        status = run(config, "status").output
        assert "was not read" in status  # the table's last column: the warning, shortened
        (row,) = json.loads(run(config, "status", "--json").output)["sources"]
        assert row["last_error"] is None
        assert any("Permission denied for offers" in w for w in row["warnings"])
        queue = run(config, "review", "list").output
        assert "UNAVAILABLE " in queue
        assert "is unavailable: Upwork would not hand this file over (HTTP 404 Not Found" in queue
        sandbox.denied.clear()
        run(config, "sync")
        assert "was not read" not in run(config, "status").output  # warnings are per sync


def test_a_milestone_error_keeps_the_contract(sandbox: Sandbox, tmp_path: Path) -> None:
    contract = next(c for c in sandbox.contracts.values() if len(c.milestones) == 2)
    broken, fine = contract.milestones
    sandbox.broken_milestones.add(broken.id)
    context = make_context(tmp_path)
    result = run_sync(connector(sandbox, tmp_path, context=context))
    (got,) = [c for c in result.contracts if c.remote_id == contract.id]
    assert [m["id"] for m in got.extra["milestones"]] == [fine.id]
    assert len(result.messages) == sandbox.story_count()
    assert any("RetainerContracts" in w and "Submission history" in w for w in context.warnings)
