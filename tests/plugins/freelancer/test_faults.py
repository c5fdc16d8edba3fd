"""Faults Freelancer.com really produces, through the real connector and CLI against the
sandbox's knobs: one bad file never stops the source, odd names, the sender key, archived
threads, partial failures, names that try to drive the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.models import Attachment
from plugins.freelancer.sandbox import Fault, Sandbox, start_sandbox
from tests.plugins.freelancer.util import (
    TOKEN_ENV,
    Run,
    expected_messages,
    fetch_all,
    write_config,
)


def cli(config: Path, *args: str) -> Result:
    """The real command line, commands of every module included (``review``)."""
    from agent.cli import App, build_cli
    from agent.cli import cli as root
    from tests.plugins.freelancer.util import host

    app = App(config, False, 0)
    app._host = host()
    build_cli(app)
    result = CliRunner().invoke(root, ["--config", str(config), *args], obj=app)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def everyone(_identity: object) -> bool:
    return True


def attachments(run: Run) -> dict[tuple[str, str], Attachment]:
    return {(m.remote_id, a.remote_id): a for m in run.messages for a in m.attachments}


def contractor_files(sandbox: Sandbox) -> list[tuple[int, str]]:
    return sorted(key for key in sandbox.files
                  if sandbox.messages[key[0]]["from_user"] != sandbox.owner_id)


def test_one_bad_file_never_stops_the_source(tmp_path: Path) -> None:
    with start_sandbox(seed=3, threads=12, attachment_every=1) as sandbox:
        files = contractor_files(sandbox)
        kinds = ["404", "410", "403", "html", "json", "wrong_type", "short", "500", "redirect"]
        assert len(files) > len(kinds)
        fault_of = dict(zip(files, kinds, strict=False))
        sandbox.file_faults.update(fault_of)
        first = fetch_all(sandbox, tmp_path, wants=everyone)
        got = attachments(first)
        assert {m.remote_id for m in first.messages} == expected_messages(sandbox)
        for (mid, name), kind in fault_of.items():
            att = got[(str(mid), name)]
            if kind == "redirect":
                assert att.status == "stored"
                assert first.files[(str(mid), name)][0] == sandbox.files[(mid, name)].data
                continue
            assert att.status == "unavailable" and att.path is None, kind
            if kind in ("404", "410", "403"):
                assert f"HTTP {kind}" in att.note and "token" not in att.note
            else:
                assert "tries again at the next sync" in att.note, (kind, att.note)
        assert sandbox.cdn_hits and all(token == "" for _, token in sandbox.cdn_hits)
        assert not list((tmp_path / "scratch").rglob("*.*"))
        passing = {k for k, v in fault_of.items() if v in ("html", "json", "wrong_type", "short", "500")}
        assert {e["message"] for e in first.cursor["retry"]} == {mid for mid, _ in passing}

        sandbox.file_faults.clear()
        sandbox.reset_log()
        second = fetch_all(sandbox, tmp_path, first.cursor, wants=everyone)
        again = attachments(second)
        for mid, name in passing:
            assert again[(str(mid), name)].status == "stored"
            assert second.files[(str(mid), name)][0] == sandbox.files[(mid, name)].data
        assert second.cursor["retry"] == []
        by_id = [r for r in sandbox.requests if r.path.endswith("/messages/0.1/messages/")
                 and "messages[]" in r.query]
        assert len(by_id) == 1  # all retried messages in one request


def test_odd_file_names_are_fetched_by_id_and_stored_safely(tmp_path: Path) -> None:
    with start_sandbox(seed=4, threads=2, attachment_every=0) as sandbox:
        tid = min(sandbox.threads)
        bidder = next(m for m in sandbox.threads[tid]["thread"]["members"] if m != sandbox.owner_id)
        names = ["..", ".", "../../etc/passwd", "a\\b/c.pdf", "x\x1b[2J\x07.pdf", "con"]
        mid = sandbox.add_message(tid, bidder, "odd names", files=[
            (name, f"data of {i}".encode() * 50, "application/octet-stream")
            for i, name in enumerate(names)])
        run = fetch_all(sandbox, tmp_path, wants=everyone)
        (message,) = [m for m in run.messages if m.remote_id == str(mid)]
        assert [a.remote_id for a in message.attachments] == names
        stored = set()
        for att in message.attachments:
            assert att.status == "stored", (att.remote_id, att.note)
            assert att.filename not in ("", ".", "..") and "/" not in att.filename
            assert "\\" not in att.filename and all(ch.isprintable() for ch in att.filename)
            stored.add(run.files[(str(mid), att.filename)][0])
        assert stored == {sandbox.files[(mid, name)].data for name in names}


def test_sender_from_from_user_id_when_from_user_is_missing(tmp_path: Path) -> None:
    with start_sandbox(seed=5, threads=3) as sandbox:
        sandbox.sender_key = "from_user_id"
        run = fetch_all(sandbox, tmp_path)
        for message in run.messages:
            sent_by = sandbox.messages[int(message.remote_id)]["from_user"]
            assert message.sender.address == str(sent_by)
            assert message.direction == ("out" if sent_by == sandbox.owner_id else "in")


def test_archived_threads_are_included(tmp_path: Path) -> None:
    with start_sandbox(seed=6, threads=4) as sandbox:
        archived = min(sandbox.threads)
        sandbox.archive_thread(archived)
        first = fetch_all(sandbox, tmp_path)
        assert {m.remote_id for m in first.messages} == expected_messages(sandbox)
        bidder = next(m for m in sandbox.threads[archived]["thread"]["members"]
                      if m != sandbox.owner_id)
        late = sandbox.add_message(archived, bidder, "one more thing, in the archived thread")
        second = fetch_all(sandbox, tmp_path, first.cursor)
        assert [m.remote_id for m in second.messages] == [str(late)]


def test_milestone_text_comes_from_other_reason_and_only_cleared_is_paid(tmp_path: Path) -> None:
    with start_sandbox(seed=7, threads=10) as sandbox:
        run = fetch_all(sandbox, tmp_path)
        requested = {m["id"]: m for m in sandbox.milestones.values()
                     if m["status"] == "requested_release"}
        assert requested and all("description" not in m for m in requested.values())
        titles = {s.remote_id: s.title for s in run.submissions}
        for mid, milestone in requested.items():
            assert titles[f"milestone:{mid}"] == milestone["other_reason"]
        for contract in run.contracts:
            bid = sandbox.bids[int(contract.remote_id.split(":")[1])]
            cleared = sum(m["amount"] for m in sandbox.milestones.values()
                          if m["status"] == "cleared" and m["project_id"] == bid["project_id"]
                          and m["bidder_id"] == bid["bidder_id"])
            assert contract.spent == pytest.approx(round(cleared, 2))


def test_no_access_to_projects_or_milestones_is_partial(tmp_path: Path) -> None:
    with start_sandbox(seed=8, threads=5) as sandbox:
        sandbox.inject(Fault("refused", path="/projects/0.1/milestones/", times=-1))
        first = fetch_all(sandbox, tmp_path)
        assert {m.remote_id for m in first.messages} == expected_messages(sandbox)
        assert first.contracts and {c.spent for c in first.contracts} == {None}
        assert "contracts_at" not in first.cursor  # read again next sync
        sandbox.clear_faults()
        sandbox.inject(Fault("refused", path="/projects/0.1/projects/", times=-1))
        (tmp_path / "again").mkdir()
        second = fetch_all(sandbox, tmp_path / "again")
        assert {m.remote_id for m in second.messages} == expected_messages(sandbox)
        assert second.contracts == []


def test_names_cannot_drive_the_terminal(tmp_path: Path) -> None:
    with start_sandbox(seed=9, threads=3) as sandbox:
        tid = min(sandbox.threads)
        bidder = next(m for m in sandbox.threads[tid]["thread"]["members"] if m != sandbox.owner_id)
        sandbox.users[bidder]["display_name"] = "\x1b]0;pwned\x07\x1b[2JMaria\u202e S."
        run = fetch_all(sandbox, tmp_path)
        names = {m.sender.name for m in run.messages if m.sender.address == str(bidder)}
        assert names == {"Maria S."}


def test_what_the_owner_sees_in_status_and_the_queue(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with start_sandbox(seed=10, threads=8, attachment_every=1) as sandbox:
        monkeypatch.setenv(TOKEN_ENV, sandbox.token)
        # the sandbox's work is dated before today: all of it enters the queue
        config = write_config(tmp_path, sandbox, agent_extra="review_since = false")
        hired = {b["bidder_id"] for b in sandbox.bids.values() if b["award_status"] == "awarded"}
        gone = next(k for k in contractor_files(sandbox)
                    if sandbox.messages[k[0]]["from_user"] in hired)
        sandbox.file_faults[gone] = "410"
        sandbox.inject(Fault("refused", path="/projects/0.1/milestones/", times=1))
        cli(config, "sync")
        (row,) = json.loads(cli(config, "status", "--json").output)["sources"]
        assert row["last_error"] is None
        assert any("milestones were not read" in w and "not allowed" in w for w in row["warnings"])
        assert "milestones were not read" in cli(config, "status").output
        queue = cli(config, "review", "list").output
        assert "UNAVAILABLE " in queue
        assert "is unavailable: Freelancer.com would not hand this file over (HTTP 410" in queue
