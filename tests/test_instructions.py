"""`retainer instructions add|edit|show|list|send`, on a store filled by a real Maildir sync."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.workflow_mail import run, synced

BRIEF = """# {{task}}

Hi {{first_name}},

Please design {{task}} by {{deadline}}.
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return synced(tmp_path)


def test_add_list_show_edit_keep_versions(config: Path, tmp_path: Path) -> None:
    brief = tmp_path / "brief.md"
    brief.write_text(BRIEF)
    doc = json.loads(run(config, "instructions", "add", "logo-brief", "--file", str(brief),
                         "--skill", "logo", "--json").stdout)
    assert doc["name"] == "logo-brief" and doc["skill"] == "logo"
    assert [v["version"] for v in doc["versions"]] == [1]
    assert "already" not in run(config, "instructions", "add", "copy", "--text", "Write {{task}}").stdout
    again = run(config, "instructions", "add", "Logo-Brief", "--text", "x", expect=1)
    assert "instructions edit" in again.output
    listed = json.loads(run(config, "instructions", "list", "--json").stdout)
    assert [(t["name"], t["version"], t["sent"]) for t in listed] == [("copy", 1, 0),
                                                                       ("logo-brief", 1, 0)]
    out = run(config, "instructions", "edit", "logo-brief", "--text",
              BRIEF + "\nSend SVG and PNG.\n").stdout
    assert "version 2 saved" in out
    # saving the same text again adds no version
    assert "version 2 saved" in run(config, "instructions", "edit", "logo-brief", "--text",
                                    BRIEF + "\nSend SVG and PNG.\n").stdout
    shown = json.loads(run(config, "instructions", "show", "logo-brief", "--json").stdout)
    assert shown["shown"]["version"] == 2 and "SVG" in shown["shown"]["text"]
    old = run(config, "instructions", "show", "logo-brief", "--version", "1").stdout
    assert old.startswith("# logo-brief v1") and "SVG" not in old
    human = run(config, "instructions").stdout
    assert "logo-brief" in human and "v2" in human and "never" in human
    assert "no instruction template" in run(config, "instructions", "show", "nope",
                                            expect=1).output


def test_send_fills_placeholders_and_is_recorded(config: Path) -> None:
    run(config, "instructions", "add", "logo-brief", "--text", BRIEF, "--skill", "logo")
    missing = run(config, "instructions", "send", "logo-brief", "--to", "Maria Lopez",
                  "--task", "a logo", "--record-only", expect=1)
    assert "deadline" in missing.output and "--set deadline=" in missing.output
    sent = json.loads(run(config, "instructions", "send", "logo-brief", "--to", "maria@example.com",
                          "--task", "the summer logo", "--set", "deadline=Friday",
                          "--record-only", "--json").stdout)
    assert sent["text"] == BRIEF.replace("{{task}}", "the summer logo").replace(
        "{{first_name}}", "Maria").replace("{{deadline}}", "Friday")
    assert sent["contractor_name"] == "Maria Lopez" and sent["version"] == 1
    assert sent["skill"] == "logo" and sent["sent"] is False
    shown = json.loads(run(config, "instructions", "show", "logo-brief", "--json").stdout)
    assert [s["id"] for s in shown["sent"]] == [sent["id"]]
    listed = json.loads(run(config, "instructions", "list", "--json").stdout)
    assert listed[0]["sent"] == 1 and listed[0]["last_sent"] == sent["sent_at"]
    human = run(config, "instructions", "show", "logo-brief").stdout
    assert "Sent 1 times; last to Maria Lopez" in human


def test_send_through_a_platform_that_cannot_send_is_refused(config: Path) -> None:
    run(config, "instructions", "add", "hello", "--text", "Hi {{name}}")
    result = run(config, "instructions", "send", "hello", "--to", "Sam Chen", "--yes", expect=1)
    assert "To:       Sam Chen <sam@example.com>" in result.output  # shown before it goes
    assert "cannot send" in result.output
    listed = json.loads(run(config, "instructions", "list", "--json").stdout)
    assert listed[0]["sent"] == 0
    declined = run(config, "instructions", "send", "hello", "--to", "Sam Chen", input="n\n",
                   expect=1)
    assert "Send this?" in declined.output and "not sent" in declined.output


def test_send_over_smtp_reaches_the_contractor(config: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from email import message_from_bytes

    from tests.support.workflow_mail import SmtpSink, switch_to_imap

    run(config, "instructions", "add", "hello", "--text", "Hi {{first_name}}, {{task}} please.",
        "--subject", "New task: {{task}}")
    monkeypatch.setenv("RETAINER_TEST_IMAP_PASSWORD", "x")
    with SmtpSink() as sink:
        switch_to_imap(config, sink.port)
        sent = json.loads(run(config, "instructions", "send", "hello", "--to", "Sam Chen",
                              "--task", "the autumn newsletter", "--yes", "--json").stdout)
    assert sent["sent"] is True and sent["source"] == "mail" and sent["remote_id"]
    assert len(sink.messages) == 1
    _, rcpts, raw = sink.messages[0]
    msg = message_from_bytes(raw)
    assert rcpts == ["sam@example.com"]
    assert msg["Message-ID"] == sent["remote_id"]
    assert msg["Subject"] == "New task: the autumn newsletter"
    assert msg.get_payload(decode=True).decode().strip() == "Hi Sam, the autumn newsletter please."
