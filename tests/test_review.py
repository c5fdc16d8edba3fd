"""The review queue: list, approve, changes, open; reviews survive re-syncs. On a store filled
by a real Maildir sync."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from agent.store import Store
from agent.store import workflow as wf
from tests.support.workflow_mail import TASKS, run, synced


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return synced(tmp_path)


def queue(config: Path, *args: str) -> list[dict]:
    return json.loads(run(config, "review", "--json", *args).stdout)


def test_queue_lists_every_delivery_oldest_first_with_overdue_flags(config: Path) -> None:
    rows = queue(config)
    assert len(rows) == len(TASKS)
    stamps = [r["received_at"] for r in rows]
    assert stamps == sorted(stamps)
    assert rows[0]["filename"] == "logo-spring.png"
    assert rows[0]["contractor"] == "Maria Lopez"
    assert rows[0]["task"] == "Re: Logo for the spring sale"
    # review_overdue = "3d": only the checkout design (delivered about a day ago) is not overdue
    fresh = [r["filename"] for r in rows if not r["overdue"]]
    assert fresh == ["checkout-design.pdf"]
    assert all(r["review_status"] == "unreviewed" for r in rows)
    assert 38 * 24 < rows[0]["age_hours"] < 40 * 24
    # `review list --json` is the same document
    assert json.loads(run(config, "review", "list", "--json").stdout) == rows


def test_queue_human_form(config: Path) -> None:
    out = run(config, "review").stdout
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "RECEIVED", "CONTRACTOR", "TASK"]
    assert "logo-spring.png" in lines[1] and "d ago OVERDUE" in lines[1]
    assert "checkout-design.pdf" in out
    assert "7 waiting, 6 overdue (older than 3 d)" in out


def test_approve_and_changes_record_rating_feedback_and_time(config: Path) -> None:
    rows = queue(config)
    first, second = rows[0]["id"], rows[1]["id"]
    before = time.time()
    doc = json.loads(run(config, "review", "approve", first, "--rating", "5", "--feedback",
                         "Lovely work", "--cost", "120", "--json").stdout)
    assert doc["review_status"] == "approved"
    assert doc["review"]["rating"] == 5
    assert doc["review"]["feedback"] == "Lovely work"
    assert doc["review"]["cost"] == 120
    reviewed = doc["review"]["reviewed_at"]
    from agent.stats import parse_time
    assert abs(parse_time(reviewed).timestamp() - before) < 60
    out = run(config, "review", "changes", second[:8], "--rating", "2", "--feedback",
              "Too long").stdout
    assert "changes requested, 2/5" in out
    remaining = queue(config)
    assert [r["id"] for r in remaining] == [r["id"] for r in rows[2:]]
    everything = queue(config, "--all")
    assert {r["id"]: r["review_status"] for r in everything}[second] == "changes_requested"
    # the deliverables listing shows the same state
    listed = json.loads(run(config, "deliverables", "--json").stdout)
    assert {d["id"]: d["review_status"] for d in listed}[first] == "approved"
    # a second review is a new round, and both events are kept
    run(config, "review", "approve", second, "--rating", "4")
    store = Store(json.loads(run(config, "config", "check", "--json").stdout)["data_dir"])
    events = [e for e in wf.review_events(store) if e["deliverable_id"] == second]
    assert [e["status"] for e in events] == ["changes_requested", "approved"]
    assert store.deliverable(second)["review"]["round"] == 2


def test_invalid_reviews_are_refused(config: Path) -> None:
    first = queue(config)[0]["id"]
    result = run(config, "review", "approve", first, "--rating", "6", expect=2)
    assert "1<=x<=5" in result.output or "between 1 and 5" in result.output
    result = run(config, "review", "approve", "d_nope", expect=1)
    assert "no deliverable" in result.output
    assert len(queue(config)) == len(TASKS)


def test_reviews_survive_a_resync_that_fetches_everything_again(config: Path, tmp_path: Path) -> None:
    first = queue(config)[0]["id"]
    run(config, "review", "approve", first, "--rating", "4", "--feedback", "ok")
    store = Store(tmp_path / "data")
    with store.writing():  # forget the cursor: the next sync reads every message again
        store.update_source_state("mail", cursor=None)
    result = json.loads(run(config, "sync", "--json").stdout)
    assert result[0]["messages_updated"] == 0 and result[0]["ok"]
    doc = Store(tmp_path / "data").deliverable(first)
    assert doc["review_status"] == "approved"
    assert doc["review"]["rating"] == 4
    assert len(queue(config)) == len(TASKS) - 1


def test_open_uses_the_system_viewer(config: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "opened.txt"
    opener = tmp_path / "opener.sh"
    opener.write_text(f'#!/bin/sh\necho "$1" > {seen}\n')
    opener.chmod(opener.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("RETAINER_OPENER", str(opener))
    row = queue(config)[0]
    out = run(config, "review", "open", row["id"]).stdout
    assert row["path"] in out
    for _ in range(100):
        if seen.exists() and seen.read_text().strip():
            break
        time.sleep(0.05)
    assert seen.read_text().strip() == row["path"]
    assert os.path.exists(row["path"])


def test_send_on_a_source_that_cannot_send_records_nothing(config: Path) -> None:
    first = queue(config)[0]["id"]
    result = run(config, "review", "approve", first, "--rating", "5", "--feedback", "Great",
                 "--send", "--yes", expect=1)
    assert "cannot send" in result.output
    assert queue(config)[0]["id"] == first  # still unreviewed


def test_feedback_is_sent_over_smtp_threaded_and_recorded(config: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from email import message_from_bytes

    from tests.support.workflow_mail import SmtpSink, switch_to_imap

    row = queue(config)[0]  # Maria's spring logo, a reply to the owner's brief
    monkeypatch.setenv("RETAINER_TEST_IMAP_PASSWORD", "not-used-for-plain-local-smtp")
    with SmtpSink() as sink:
        switch_to_imap(config, sink.port)
        declined = run(config, "review", "changes", row["id"], "--rating", "3", "--feedback",
                       "Please make the sun bigger.", "--send", input="n\n", expect=1)
        assert "To:       Maria Lopez <maria@example.com>" in declined.output
        assert "In-Reply-To: <work-t1@example.com>" in declined.output
        assert "Please make the sun bigger." in declined.output
        assert sink.messages == [] and queue(config)[0]["id"] == row["id"]  # nothing happened
        done = run(config, "review", "changes", row["id"], "--rating", "3", "--feedback",
                   "Please make the sun bigger.", "--send", input="y\n")
        assert "feedback sent to email:maria@example.com" in done.output
    assert len(sink.messages) == 1
    mail_from, rcpts, raw = sink.messages[0]
    assert rcpts == ["maria@example.com"] and mail_from == "owner@example.com"
    msg = message_from_bytes(raw)
    assert msg["Subject"] == "Re: Logo for the spring sale"
    assert msg["In-Reply-To"] == "<work-t1@example.com>"
    assert msg["References"].split() == ["<brief-t1@owner.example.com>", "<work-t1@example.com>"]
    body = msg.get_payload(decode=True).decode()
    assert "Please make the sun bigger." in body and "logo-spring.png: needs changes (3/5)" in body
    store = Store(tmp_path / "data")
    doc = store.deliverable(row["id"])
    assert doc["review_status"] == "changes_requested"
    assert doc["review"]["sent"][0]["remote_id"] == msg["Message-ID"]
    sent = wf.outbox(store)
    assert [(s["kind"], s["to"], s["in_reply_to"]) for s in sent] == [
        ("feedback", "email:maria@example.com", "<work-t1@example.com>")]


def test_send_with_yes_and_json_prints_only_json(config: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.workflow_mail import SmtpSink, switch_to_imap

    row = queue(config)[1]
    monkeypatch.setenv("RETAINER_TEST_IMAP_PASSWORD", "x")
    with SmtpSink() as sink:
        switch_to_imap(config, sink.port)
        result = run(config, "review", "approve", row["id"], "--rating", "5", "--send", "--yes",
                     "--json")
    doc = json.loads(result.stdout)
    assert doc["review_status"] == "approved" and doc["sent"]["kind"] == "feedback"
    assert len(sink.messages) == 1 and b"Thank you, this is approved." in sink.messages[0][2]


@pytest.mark.dovecot
def test_imap_synced_feedback_goes_back_over_smtp(dovecot_mailbox, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole loop on real servers: Dovecot IMAP sync, review, SMTP reply in the thread."""
    from email import message_from_bytes

    from tests.support.workflow_mail import CONFIG, OWNER, SmtpSink, mailbox_messages

    dovecot_mailbox.create_folder("Sent")
    for folder, _name, raw in mailbox_messages():
        dovecot_mailbox.append(folder or "INBOX", raw)
    for key, value in dovecot_mailbox.env().items():
        monkeypatch.setenv(key, value)
    with SmtpSink() as sink:
        head = CONFIG[:CONFIG.index("[[sources]]")].format(data=tmp_path / "data", owner=OWNER)
        source = dovecot_mailbox.source_toml(name="inbox", folders=["INBOX", "Sent"])
        config = tmp_path / "config.toml"
        config.write_text(head + source + "[sources.settings.smtp]\nhost = \"127.0.0.1\"\n"
                          f"port = {sink.port}\nsecurity = \"none\"\n")
        run(config, "sync")
        rows = queue(config)
        assert [r["filename"] for r in rows][:2] == ["logo-spring.png", "blog-freelancer.docx"]
        assert {r["source"] for r in rows} == {"inbox"}
        roster = {r["name"]: r for r in json.loads(run(config, "contractors", "--json").stdout)}
        assert roster["Maria Lopez"]["median_turnaround_hours"] == pytest.approx(20, abs=0.1)
        run(config, "review", "changes", rows[1]["id"], "--rating", "3", "--feedback",
            "Shorter intro, please.", "--send", "--yes")
    assert len(sink.messages) == 1
    msg = message_from_bytes(sink.messages[0][2])
    assert msg["To"] == "Sam Chen <sam@example.com>"
    assert msg["In-Reply-To"] == "<work-t4@example.com>"
    assert msg["References"].split() == ["<brief-t4@owner.example.com>", "<work-t4@example.com>"]
    assert msg["From"] == dovecot_mailbox.user  # the IMAP username is the default sender
