"""Promotion backfill by link: after `contractors add`, the next sync reads that person's
earlier stories again by id, downloads their files by their links, and queues them with
their own dates (the sandbox shaped like Upwork's GraphQL API, the real plugin and CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.store import Store
from plugins.upwork.sandbox import DEFAULT_CLIENT_SECRET, start_sandbox
from tests.plugins.upwork.test_cli import SECRET_ENV, run, state_dir, write_config
from tests.plugins.upwork.util import SOURCE


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, DEFAULT_CLIENT_SECRET)


def test_contractors_add_backfills_earlier_files_by_link(tmp_path: Path) -> None:
    with start_sandbox(seed=5, threads=3, messages_per_thread=8, attachment_every=1,
                       attachment_size=3000) as sandbox:
        # contracts off: nobody is hired by a contract, so only the roster decides
        config = write_config(tmp_path, sandbox.base_url, contracts=False)
        sandbox.authorize_source(state_dir(tmp_path))
        run(config, "sync", SOURCE)
        assert json.loads(run(config, "deliverables", "--json").stdout) == []
        first = {m["remote_id"]: m for m in Store(tmp_path / "data").iter_messages()}
        rooms = list(sandbox.rooms.values())
        person = next(u for u in rooms[0].user_ids if u != sandbox.owner.id)
        other = next(u for u in rooms[1].user_ids if u != sandbox.owner.id)
        assert person != other
        theirs = {a.id: (a, s) for r in rooms for s in r.stories if s.user_id == person
                  for a in s.attachments}
        assert len(theirs) >= 2

        run(config, "contractors", "add", f"upwork:{person}")
        before = len(sandbox.hits)
        run(config, "sync", SOURCE)
        reread = [h for h in sandbox.hits[before:] if h.operation == "RetainerRoomStory"]
        stories = {s.id for _, s in theirs.values()}
        assert len(reread) == len(stories)  # one request per story that had files

        listed = json.loads(run(config, "deliverables", "--json").stdout)
        assert sorted(d["remote_id"].rpartition("#")[2] for d in listed) == sorted(theirs)
        store = Store(tmp_path / "data", create=False)
        for doc in listed:
            att, story = theirs[doc["remote_id"].rpartition("#")[2]]
            assert doc["status"] == "stored" and doc["review_status"] == "unreviewed"
            assert doc["received_at"][:19] == story.created.isoformat()[:19]  # its own date
            assert (tmp_path / "data" / doc["path"]).read_bytes() == b"".join(att.content())
        # the messages are what they were, apart from their files and the backfill mark
        messages = {m["remote_id"]: m for m in store.iter_messages()}
        for story_id in stories:
            message, was = messages[story_id], first[story_id]
            assert all(a["status"] == "stored" for a in message["attachments"])
            assert message["extra"] == {**was["extra"], "backfill": True}
            changed = ("attachments", "extra", "contractor_id")
            assert {k: v for k, v in message.items() if k not in changed} == \
                {k: v for k, v in was.items() if k not in changed}
        # the other person's files stay recorded, not downloaded; nothing waits any more
        assert all(a["status"] == "not_downloaded" for m in messages.values()
                   if m["sender"]["address"] == other for a in m["attachments"])
        assert store.source_state(SOURCE).get("backfill") == []
        assert store.backfill_locators(SOURCE) == []
        before = len(sandbox.hits)
        run(config, "sync", SOURCE)
        assert [h.operation for h in sandbox.hits[before:]] == ["RetainerRoomList"]
