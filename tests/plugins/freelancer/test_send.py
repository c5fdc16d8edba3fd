"""Sending to a Freelancer.com thread (``POST messages/0.1/threads/{id}/messages/``): the
connector against the sandbox, and ``retainer review changes --send`` through the CLI."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from agent.cli import App, build_cli, cli
from agent.errors import AuthError, SourceError, TransientError
from agent.models import Identity, Outgoing
from agent.store import Store
from agent.store import workflow as wf
from plugins.freelancer.sandbox import Fault, LoggedRequest, Sandbox, start_sandbox
from tests.plugins.freelancer.util import TOKEN_ENV, connector, fetch_all, host, write_config


def run_cli(config: Path, *args: str, expect: int = 0) -> Result:
    """The real command line, every command group registered (``review`` included)."""
    app = App(config, False, 0)
    app._host = host()
    build_cli(app)
    result = CliRunner().invoke(cli, ["--config", str(config), *args], obj=app)
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def posts(sandbox: Sandbox) -> list[LoggedRequest]:
    return [r for r in sandbox.requests if r.method == "POST"]


def a_thread(sandbox: Sandbox) -> tuple[int, int]:
    """A project thread and its freelancer."""
    tid = min(sandbox.threads)
    member = next(m for m in sandbox.threads[tid]["thread"]["members"] if m != sandbox.owner_id)
    return tid, member


def outgoing(sandbox: Sandbox, text: str = "Please use the darker green.") -> Outgoing:
    tid, member = a_thread(sandbox)
    return Outgoing(to=Identity("freelancer", str(member)), text=text, subject="Re: work",
                    thread_remote_id=str(tid))


def send(sandbox: Sandbox, tmp_path: Path, message: Outgoing, **settings: Any) -> str:
    conn = connector(sandbox, tmp_path, **settings)
    try:
        return conn.send(message)
    finally:
        conn.close()


def test_send_posts_to_the_thread_and_the_next_sync_reads_it_back_once(tmp_path: Path) -> None:
    with start_sandbox(seed=41, threads=5, messages_per_thread=4) as sandbox:
        first = fetch_all(sandbox, tmp_path)
        tid, _member = a_thread(sandbox)
        text = "Please use the darker green.\nThanks & regards, Dana"
        sandbox.clock.advance(5)
        mid = send(sandbox, tmp_path, outgoing(sandbox, text))
        assert sandbox.posted == [int(mid)]
        posted = sandbox.messages[int(mid)]
        assert (posted["thread_id"], posted["from_user"], posted["message"]) == (
            tid, sandbox.owner_id, text)
        (request,) = posts(sandbox)
        assert request.path == f"/api/messages/0.1/threads/{tid}/messages/"
        assert request.status == 200 and request.authorized

        second = fetch_all(sandbox, tmp_path, first.cursor)
        mine = [m for m in second.messages if m.remote_id == mid]
        assert len(mine) == 1 and len(second.messages) == 1
        assert mine[0].direction == "out" and mine[0].text == text
        assert mine[0].thread_remote_id == str(tid)
        third = fetch_all(sandbox, tmp_path, second.cursor)
        assert third.messages == [] and third.requests == 1


def test_revoked_token_is_an_auth_error_and_nothing_is_posted(tmp_path: Path) -> None:
    with start_sandbox(seed=42, threads=3) as sandbox:
        sandbox.revoke_token()
        with pytest.raises(AuthError) as caught:
            send(sandbox, tmp_path, outgoing(sandbox))
        assert "Create a new token" in str(caught.value) and "not sent" in str(caught.value)
        assert sandbox.token not in str(caught.value)
        sandbox.token = sandbox.issue_token()
        sandbox.inject(Fault("auth200", path="/threads/"))
        with pytest.raises(AuthError, match=r"Create a new token"):
            send(sandbox, tmp_path, outgoing(sandbox))
        assert sandbox.posted == []


def test_an_error_envelope_with_http_200_is_a_source_error_and_not_retried(tmp_path: Path) -> None:
    with start_sandbox(seed=43, threads=3) as sandbox:
        sandbox.inject(Fault("error200", path="/threads/"))
        with pytest.raises(SourceError, match=r"may or may not have been posted") as caught:
            send(sandbox, tmp_path, outgoing(sandbox), max_retries=3)
        assert not isinstance(caught.value, TransientError)
        assert len(posts(sandbox)) == 1 and sandbox.posted == []


def test_unknown_thread_and_blank_text_are_refused(tmp_path: Path) -> None:
    with start_sandbox(seed=44, threads=3) as sandbox:
        with pytest.raises(SourceError, match=r"no thread 999 you can write to"):
            send(sandbox, tmp_path, Outgoing(to=Identity("freelancer", "1"), text="hi",
                                             thread_remote_id="999"))
        stranger = sandbox.add_freelancer("Sam Stranger")
        other = sandbox.add_thread([stranger, sandbox.add_freelancer("Alex Other")])
        with pytest.raises(SourceError, match=f"no thread {other}"):
            send(sandbox, tmp_path, Outgoing(to=Identity("freelancer", str(stranger)),
                                             text="hi", thread_remote_id=str(other)))
        with pytest.raises(SourceError, match=r"empty"):
            send(sandbox, tmp_path, outgoing(sandbox, " \n "))
        assert sandbox.posted == []
        assert [r.status for r in posts(sandbox)] == [404, 404]


def test_a_5xx_or_a_timeout_is_not_retried(tmp_path: Path) -> None:
    with start_sandbox(seed=45, threads=3) as sandbox:
        sandbox.inject(Fault("503", path="/threads/", retry_after=0))
        with pytest.raises(TransientError, match=r"HTTP 503.*may or may not have been posted"):
            send(sandbox, tmp_path, outgoing(sandbox), max_retries=3)
        assert len(posts(sandbox)) == 1
        sandbox.inject(Fault("hang", path="/threads/", hang_seconds=2))
        with pytest.raises(TransientError, match=r"timed out.*may or may not"):
            send(sandbox, tmp_path, outgoing(sandbox), max_retries=3, timeout=0.5)
        assert len(posts(sandbox)) == 2 and sandbox.posted == []


def test_a_429_is_waited_out_and_sent_once(tmp_path: Path) -> None:
    with start_sandbox(seed=46, threads=3) as sandbox:
        sandbox.inject(Fault("429", path="/threads/", retry_after=0))
        mid = send(sandbox, tmp_path, outgoing(sandbox))
        assert [r.status for r in posts(sandbox)] == [429, 200]
        assert sandbox.posted == [int(mid)]


def test_a_refused_connection_says_nothing_was_sent(tmp_path: Path) -> None:
    with start_sandbox(seed=47, threads=2) as sandbox, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with pytest.raises(TransientError, match=r"connection refused.*was not sent"):
            send(sandbox, tmp_path, outgoing(sandbox), base_url=f"http://127.0.0.1:{port}")


def test_without_a_thread_the_newest_thread_with_the_freelancer_is_used(tmp_path: Path) -> None:
    with start_sandbox(seed=48, threads=3) as sandbox:
        freelancer = sandbox.add_freelancer("Nia Quinn")
        old_project = sandbox.add_project("Old job")
        new_project = sandbox.add_project("New job")
        on_old = sandbox.add_thread([sandbox.owner_id, freelancer], project_id=old_project)
        sandbox.clock.advance(5)
        on_new = sandbox.add_thread([sandbox.owner_id, freelancer], project_id=new_project)
        to = Identity("freelancer", str(freelancer), "Nia Quinn")
        first = send(sandbox, tmp_path, Outgoing(to=to, text="newest"))
        chosen = send(sandbox, tmp_path, Outgoing(to=to, text="on the old project",
                                                  extra={"project_id": old_project}))
        assert sandbox.messages[int(first)]["thread_id"] == on_new
        assert sandbox.messages[int(chosen)]["thread_id"] == on_old
        nobody = sandbox.add_freelancer("No Thread")
        with pytest.raises(SourceError, match=r"no Freelancer.com thread with No Thread"):
            send(sandbox, tmp_path, Outgoing(to=Identity("freelancer", str(nobody), "No Thread"),
                                             text="hi"))


# -- through the command line -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["milestone", "attachment"])
def test_review_changes_send_posts_the_feedback_to_the_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    with start_sandbox(seed=49, threads=6, messages_per_thread=4, attachment_every=1) as sandbox:
        monkeypatch.setenv(TOKEN_ENV, sandbox.token)
        config = write_config(tmp_path, sandbox)
        run_cli(config, "sync")
        deliverables = json.loads(run_cli(config, "deliverables", "--json").stdout)
        if kind == "milestone":
            target = next(d for d in deliverables if d["status"] == "delivery_waiting")
            freelancer = int(target["identity"].split(":")[1])
            allowed = {t["id"] for t in sandbox.threads.values()
                       if freelancer in t["thread"]["members"]}
        else:
            target = next(d for d in deliverables if d["status"] == "stored")
            stored = json.loads(run_cli(config, "messages", "--json").stdout)
            (carrier,) = [m for m in stored if m["id"] == target["message_id"]]
            allowed = {int(carrier["thread_remote_id"])}
            assert sandbox.messages[int(carrier["remote_id"])]["thread_id"] in allowed
        feedback = "The heading is still too small; please enlarge it."
        result = run_cli(config, "review", "changes", target["id"], "--rating", "2",
                         "--feedback", feedback, "--send", "--yes")
        assert "changes requested, 2/5" in result.output
        assert "feedback sent to freelancer:" in result.output

        (mid,) = sandbox.posted
        posted = sandbox.messages[mid]
        assert posted["thread_id"] in allowed and posted["from_user"] == sandbox.owner_id
        assert feedback in posted["message"] and "needs changes (2/5)" in posted["message"]
        assert len(posts(sandbox)) == 1

        store = Store(tmp_path / "data")
        doc = store.deliverable(target["id"])
        assert doc["review_status"] == "changes_requested"
        assert [s["remote_id"] for s in doc["review"]["sent"]] == [str(mid)]
        (sent,) = wf.outbox(store)
        assert sent["remote_id"] == str(mid) and sent["source"] == "fl"

        sandbox.clock.advance(2)
        run_cli(config, "sync")
        messages = json.loads(run_cli(config, "messages", "--json").stdout)
        mine = [m for m in messages if m["remote_id"] == str(mid)]
        assert len(mine) == 1 and mine[0]["direction"] == "out"
        assert mine[0]["thread_remote_id"] == str(posted["thread_id"])
        assert len(messages) == len(sandbox.messages)
