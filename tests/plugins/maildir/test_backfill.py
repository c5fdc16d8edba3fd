"""Promotion backfill: after `contractors add`, the next sync fetches the files that
person sent before, with their original dates (Maildir through the command line)."""

from __future__ import annotations

import json
from pathlib import Path

from agent.store import Store
from tests.plugins.maildir.test_e2e import run, write_config
from tests.plugins.maildir.util import deliver, mail, make_maildir


def test_contractors_add_backfills_earlier_files(tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Mail")
    deliver(maildir, mail(1, sender="newbie@example.com", subject="First draft",
                          attachment=("draft.pdf", b"%PDF draft")))
    deliver(maildir, mail(2, sender="other@example.com", subject="Not promoted",
                          attachment=("other.pdf", b"%PDF other")))
    data, home, cwd = tmp_path / "data", tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    config = write_config(tmp_path, maildir, data)
    assert run(config, "sync", cwd=cwd, home=home).returncode == 0
    listed = json.loads(run(config, "deliverables", "--json", cwd=cwd, home=home).stdout)
    assert listed["deliverables"] == [] if isinstance(listed, dict) else listed == []

    added = run(config, "contractors", "add", "newbie@example.com", cwd=cwd, home=home)
    assert added.returncode == 0, added.stderr
    result = run(config, "sync", cwd=cwd, home=home)
    assert result.returncode == 0, result.stderr
    listed = json.loads(run(config, "deliverables", "--json", cwd=cwd, home=home).stdout)
    items = listed["deliverables"] if isinstance(listed, dict) else listed
    assert [d["filename"] for d in items] == ["draft.pdf"]
    assert items[0]["received_at"].startswith("2026-01-05")  # the mail's own date
    # done once: nothing waits any more, the other stranger's file stays unfetched
    assert Store(data, create=False).source_state("mail").get("backfill") == []
    assert Store(data, create=False).backfill_locators("mail") == []
