"""Gmail's X-GM-EXT-1: a message shown in several folders (one per label, and All Mail) is
read once per sync and stored once, with its labels on the record.

Dovecot has no X-GM-EXT-1, so these tests put :mod:`tests.servers.gmail_proxy` in front
of it: a loopback proxy (a labelled test double, not Gmail) that advertises the extension
and answers X-GM-MSGID / X-GM-LABELS from Dovecot's own data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plugins.imap.connector import GMAIL_META_ITEMS, ImapConnector
from plugins.imap.settings import ImapSettings
from tests.servers.dovecot import Dovecot, Mailbox
from tests.servers.gmail_proxy import gmail_msgid, gmail_proxy

from .util import context, corpus, run

pytestmark = pytest.mark.dovecot
FOLDERS = ["INBOX", "All Mail", "Work"]


def fill(mailbox: Mailbox) -> list[bytes]:
    mailbox.create_folder("All Mail")
    mailbox.create_folder("Work")
    raws = corpus(4, attachment_every=2)
    mailbox.append_many("INBOX", raws)
    mailbox.append_many("All Mail", raws)  # Gmail: every message is in All Mail too
    mailbox.append("Work", raws[1])  # and in one folder per label
    return raws


def settings(mailbox: Mailbox, port: int) -> dict[str, Any]:
    values = mailbox.settings(folders=FOLDERS)
    values["port"] = port
    return values


def test_one_record_per_message_with_its_labels(dovecot: Dovecot, dovecot_mailbox: Mailbox,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fill(dovecot_mailbox)
    monkeypatch.setenv("RETAINER_TEST_IMAP_PASSWORD", dovecot_mailbox.password)
    with gmail_proxy(dovecot, dovecot_mailbox) as proxy:
        conn = ImapConnector(ImapSettings.model_validate(settings(dovecot_mailbox, proxy.port)),
                             context(tmp_path))
        messages, cursor, _ = run(conn, {})
        assert proxy.gmail_fetches == 3  # one per folder
    assert "X-GM-MSGID X-GM-LABELS" in GMAIL_META_ITEMS
    assert len(messages) == 4 and conn.stats.gmail_repeats == 5
    by_id = {m.remote_id.split("~")[0]: m for m in messages}  # the Message-ID part
    assert set(by_id) == {f"<m{i}@test.example>" for i in range(4)}
    assert by_id["<m1@test.example>"].extra["labels"] == ["\\Inbox", "Work"]
    assert by_id["<m0@test.example>"].extra["labels"] == ["\\Inbox"]
    assert by_id["<m2@test.example>"].extra["gmail_msgid"] == str(gmail_msgid("<m2@test.example>"))
    assert all(m.extra["folder"] == "INBOX" for m in messages)  # read where first seen
    assert set(cursor["folders"]) == set(FOLDERS)  # every folder's position committed


def test_synced_through_the_cli_and_stored_once(dovecot: Dovecot, dovecot_mailbox: Mailbox,
                                                tmp_path: Path) -> None:
    fill(dovecot_mailbox)
    with gmail_proxy(dovecot, dovecot_mailbox) as proxy:
        config = tmp_path / "retainer.toml"
        source = dovecot_mailbox.source_toml("gmail", folders=FOLDERS)
        source = source.replace(f"port = {dovecot.port}", f"port = {proxy.port}")
        config.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n'
                          'owner_emails = ["owner@example.com"]\n' + source)
        env = {**os.environ, **dovecot_mailbox.env()}

        def retainer(*args: str) -> str:
            done = subprocess.run([sys.executable, "-m", "agent", "--config", str(config), *args],
                                  capture_output=True, text=True, timeout=120, env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        retainer("sync")
        retainer("sync")  # nothing new: nothing doubled either
        stored = json.loads(retainer("messages", "--json"))
    assert len(stored) == 4
    assert len({m["remote_id"] for m in stored}) == 4
    labels = {m["remote_id"].split("~")[0]: m["extra"]["labels"] for m in stored}
    assert labels["<m1@test.example>"] == ["\\Inbox", "Work"]  # kept on the stored record
    assert labels["<m3@test.example>"] == ["\\Inbox"]
