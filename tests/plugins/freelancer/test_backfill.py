"""Promotion backfill by link: after `contractors add`, the next sync reads that person's
earlier messages again by id, downloads their files by their links, and queues them with
their own dates (the sandbox shaped like Freelancer.com's API, the real plugin and CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.store import Store
from plugins.freelancer.sandbox import start_sandbox
from tests.plugins.freelancer.util import TOKEN_ENV, run_cli, write_config


def test_contractors_add_backfills_earlier_files_by_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_sandbox(seed=41, threads=8, messages_per_thread=6, attachment_every=1) as sandbox:
        monkeypatch.setenv(TOKEN_ENV, sandbox.token)
        config = write_config(tmp_path, sandbox)
        run_cli(config, "sync")
        first = {m["remote_id"]: m for m in Store(tmp_path / "data").iter_messages()}
        waiting: dict[str, list[dict]] = {}  # files recorded, not downloaded, per sender
        for message in first.values():
            if message["direction"] == "in" and not message["contractor_id"]:
                for att in message["attachments"]:
                    if att["status"] == "not_downloaded":
                        waiting.setdefault(message["identity"], []).append(message)
                        break
        assert len(waiting) >= 2, "the sandbox should have two strangers who sent files"
        person, other = sorted(waiting)[:2]
        before = json.loads(run_cli(config, "deliverables", "--json").stdout)

        run_cli(config, "contractors", "add", person)
        sandbox.reset_log()
        run_cli(config, "sync")
        by_id = [r for r in sandbox.requests if "messages[]" in r.query]
        assert len(by_id) == 1  # their messages, read again in one request

        after = json.loads(run_cli(config, "deliverables", "--json").stdout)
        new = [d for d in after if d["id"] not in {b["id"] for b in before}]
        theirs = {m["remote_id"] for m in waiting[person]}
        assert {d["remote_id"].rpartition("#")[0] for d in new} == theirs
        for doc in new:
            message = first[doc["remote_id"].rpartition("#")[0]]
            name = doc["remote_id"].rpartition("#")[2]
            data = sandbox.files[(int(message["remote_id"]), name)].data
            assert doc["status"] == "stored" and doc["review_status"] == "unreviewed"
            assert doc["received_at"] == message["sent_at"]  # its own date
            assert (tmp_path / "data" / doc["path"]).read_bytes() == data
        store = Store(tmp_path / "data", create=False)
        messages = {m["remote_id"]: m for m in store.iter_messages()}
        changed = ("attachments", "extra", "contractor_id")
        for remote_id in theirs:  # as they were, apart from their files and the mark
            message, was = messages[remote_id], first[remote_id]
            assert message["extra"] == {**was["extra"], "backfill": True}
            assert {k: v for k, v in message.items() if k not in changed} == \
                {k: v for k, v in was.items() if k not in changed}
        for message in waiting[other]:  # the other stranger's files stay where they were
            assert messages[message["remote_id"]]["attachments"] == message["attachments"]
        assert store.source_state("fl").get("backfill") == []
        assert store.backfill_locators("fl") == []
