"""End to end: the real ``retainer`` CLI (a subprocess) syncing from the test Dovecot."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.servers.dovecot import Mailbox

from .util import corpus, make_message

pytestmark = pytest.mark.dovecot

CONTRACTORS = ["maria@design.example", "ravi@devshop.example", "li@words.example"]


def write_config(tmp_path: Path, mailbox: Mailbox, **settings: Any) -> Path:
    lines = ["[agent]", f'data_dir = "{tmp_path / "data"}"', 'owner_emails = ["owner@example.com"]', ""]
    for index, address in enumerate(CONTRACTORS):
        lines += ["[[contractors]]", f'name = "Contractor {index}"', f'emails = ["{address}"]',
                  'status = "core"', ""]
    config = tmp_path / "retainer.toml"
    config.write_text("\n".join(lines) + mailbox.source_toml("inbox", **settings))
    return config


def retainer(config: Path, mailbox: Mailbox, *args: str, check: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "agent", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **mailbox.env(), **(env or {})})
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def start(config: Path, mailbox: Mailbox, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "agent", "--config", str(config), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **mailbox.env()})


def stored(config: Path, mailbox: Mailbox) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json.loads(retainer(config, mailbox, "messages", "--json").stdout)
    return docs


def mixed_corpus(count: int, start: int = 0) -> list[bytes]:
    out = []
    for i in range(start, start + count):
        sender = CONTRACTORS[i % len(CONTRACTORS)] if i % 5 else "stranger@else.example"
        out.extend(corpus(1, start=i, seed=i, sender=sender, attachment_every=2))
    return out


def test_sync_resync_and_listings(dovecot_mailbox: Mailbox, tmp_path: Path) -> None:
    dovecot_mailbox.append_many("INBOX", mixed_corpus(20))
    config = write_config(tmp_path, dovecot_mailbox)
    retainer(config, dovecot_mailbox, "sync")
    docs = stored(config, dovecot_mailbox)
    assert sorted(d["extra"]["legacy_remote_id"] for d in docs) == sorted(dovecot_mailbox.message_ids())
    deliverables = json.loads(retainer(config, dovecot_mailbox, "deliverables", "--json").stdout)
    # attachments on even messages; only contractors' (not i % 5 == 0) are deliverables
    expected = [i for i in range(20) if i % 2 == 0 and i % 5]
    assert sorted(d["filename"] for d in deliverables) == sorted(f"file-{i}.pdf" for i in expected)
    for doc in deliverables:
        path = Path(doc["path"])
        path = path if path.is_absolute() else tmp_path / "data" / path
        assert path.is_file() and path.stat().st_size == doc["size"]

    again = retainer(config, dovecot_mailbox, "sync", "--json")
    assert "0 new" in again.stdout or '"messages_new": 0' in again.stdout
    dovecot_mailbox.append_many("INBOX", mixed_corpus(3, start=20))
    retainer(config, dovecot_mailbox, "sync")
    assert len(stored(config, dovecot_mailbox)) == 23


def test_uidvalidity_reset_stores_no_duplicates(dovecot_mailbox: Mailbox, tmp_path: Path) -> None:
    dovecot_mailbox.append_many("INBOX", mixed_corpus(10))
    config = write_config(tmp_path, dovecot_mailbox)
    retainer(config, dovecot_mailbox, "sync")
    dovecot_mailbox.recreate()
    dovecot_mailbox.append("INBOX", make_message(500))
    retainer(config, dovecot_mailbox, "sync")
    docs = stored(config, dovecot_mailbox)
    assert len(docs) == 11 == len({d["remote_id"] for d in docs})
    deliverables = json.loads(retainer(config, dovecot_mailbox, "deliverables", "--json").stdout)
    assert len(deliverables) == len({d["filename"] for d in deliverables})


def test_wrong_password_exits_1_and_says_what_to_check(dovecot_mailbox: Mailbox,
                                                       tmp_path: Path) -> None:
    config = write_config(tmp_path, dovecot_mailbox)
    done = retainer(config, dovecot_mailbox, "sync", check=False,
                    env={"RETAINER_TEST_IMAP_PASSWORD": "wrong-password-42"})
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "sources.settings.password" in output
    assert "wrong-password-42" not in output
    assert "Traceback" not in output


def test_self_signed_server_without_ca_file_exits_1(dovecot_mailbox: Mailbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, dovecot_mailbox, security="tls", ca_file="")
    done = retainer(config, dovecot_mailbox, "sync", check=False)
    assert done.returncode == 1
    assert "ca_file" in done.stdout + done.stderr


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(dovecot_mailbox: Mailbox, tmp_path: Path) -> None:
    """50 syncs killed with SIGKILL at random moments; the store always loads and ends with
    exactly the mailbox's messages, each once. When a sync finishes before its kill, the
    mailbox changes (new mail, or a new UIDVALIDITY that makes everything be read again)."""
    rng = random.Random(20261123)
    dovecot_mailbox.append_many("INBOX", mixed_corpus(300))
    config = write_config(tmp_path, dovecot_mailbox, batch_size=25)
    next_index = 300
    finished = killed = 0
    started = time.monotonic()
    typical = 2.0  # how long a whole sync takes (learned from the ones that finish)
    for round_ in range(50):
        process = start(config, dovecot_mailbox, "-q", "sync")
        began = time.monotonic()
        deadline = began + rng.uniform(0.05, typical)
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait(timeout=30)
        _, errors = process.communicate()
        assert "Traceback" not in errors, errors
        docs = stored(config, dovecot_mailbox)  # the store loads after every kill
        assert len(docs) == len({d["remote_id"] for d in docs}), f"duplicates after round {round_}"
        if process.returncode == 0:
            finished += 1
            typical = max(0.5, (typical + time.monotonic() - began) / 2)
            if finished % 3 == 0:
                dovecot_mailbox.append_many("INBOX", mixed_corpus(20, start=next_index))
                next_index += 20
            dovecot_mailbox.recreate()  # the next sync reads every message again
    retainer(config, dovecot_mailbox, "sync")
    docs = stored(config, dovecot_mailbox)
    remote_ids = [d["extra"]["legacy_remote_id"] for d in docs]  # the Message-IDs
    in_mailbox = dovecot_mailbox.message_ids()
    assert len(in_mailbox) == next_index
    assert sorted(remote_ids) == sorted(in_mailbox)  # all of them, none twice
    deliverables = json.loads(retainer(config, dovecot_mailbox, "deliverables", "--json").stdout)
    names = [d["filename"] for d in deliverables]
    assert len(names) == len(set(names))
    assert killed >= 25, f"only {killed} of 50 syncs were killed mid-way"
    assert time.monotonic() - started < 240


def test_hostile_attachment_names_stay_inside_the_store(dovecot_mailbox: Mailbox,
                                                        tmp_path: Path) -> None:
    names = ["../../../../tmp/escape.sh", "/etc/cron.d/evil", "..", "a" * 600 + ".pdf", "nul\x00.txt"]
    files = [(name, f"data {i}".encode(), "application/octet-stream") for i, name in enumerate(names)]
    dovecot_mailbox.append("INBOX", make_message(1, sender=CONTRACTORS[0], attachments=files))
    config = write_config(tmp_path, dovecot_mailbox)
    retainer(config, dovecot_mailbox, "sync")
    deliverables = json.loads(retainer(config, dovecot_mailbox, "deliverables", "--json").stdout)
    assert len(deliverables) == len(names)
    data = (tmp_path / "data").resolve()
    for doc in deliverables:
        path = Path(doc["path"])
        path = (path if path.is_absolute() else data / path).resolve()
        assert path.is_relative_to(data) and path.is_file()
        assert len(path.name.encode()) <= 255
    assert not Path("/tmp/escape.sh").exists()


def test_verbosity_page_lines_and_protocol_lines(dovecot_mailbox: Mailbox, tmp_path: Path) -> None:
    """Default: the summary on stdout, nothing on stderr; -v: one line per stored page;
    -vv: the IMAP conversation too."""
    dovecot_mailbox.append_many("INBOX", mixed_corpus(30))
    config = write_config(tmp_path, dovecot_mailbox, batch_size=10)
    plain = retainer(config, dovecot_mailbox, "sync")
    assert "inbox: 30 new messages" in plain.stdout and plain.stderr == ""
    lines: dict[str, list[str]] = {}
    for flag in ("-v", "-vv"):
        data = tmp_path / "data"
        data.rename(tmp_path / f"data{flag}")  # a first sync again
        done = retainer(config, dovecot_mailbox, flag, "sync")
        assert "inbox: 30 new messages" in done.stdout
        lines[flag] = done.stderr.splitlines()
    pages = [line for line in lines["-v"] if line.startswith("inbox: page ")]
    assert len(pages) == 3 and "(30/30)" in pages[-1]
    assert len(lines["-v"]) < 10  # pages and a few notes: no protocol
    assert not any("FETCH" in line for line in lines["-v"])
    assert sum("FETCH" in line for line in lines["-vv"]) >= 3  # the conversation
    assert len(lines["-vv"]) > 3 * len(lines["-v"])


def test_a_failed_source_is_one_line_on_stderr_naming_it_once(dovecot_mailbox: Mailbox,
                                                              tmp_path: Path) -> None:
    bad = tmp_path / "not-a-certificate.pem"
    bad.write_text("this is no PEM\n")
    config = write_config(tmp_path, dovecot_mailbox, security="tls", ca_file=str(bad))
    done = retainer(config, dovecot_mailbox, "sync", check=False)
    assert done.returncode == 1
    assert done.stdout.startswith("inbox: failed")  # the summary, on stdout
    errors = done.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("retainer: error: inbox: "), done.stderr
    assert "ca_file" in errors[0] and "inbox: inbox:" not in errors[0]
