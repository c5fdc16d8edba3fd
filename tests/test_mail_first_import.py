"""First import of an old mailbox: `review_since` and `review approve --all --before`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.plugins.maildir.test_e2e import run
from tests.plugins.maildir.util import deliver, make_maildir
from tests.test_mail_realworld import TEXT, attachment, mixed


def dated(day: str, name: bytes) -> bytes:
    head = (b"From: Maria Lopez <maria@example.com>\nTo: owner@example.com\n"
            b"Date: " + day.encode() + b" 10:00:00 +0000\n")
    return mixed(TEXT, attachment(name, b"%PDF " + name), head=head, msgid=b"<" + name + b"@x>")


def test_old_work_enters_the_queue_handled_and_a_backlog_clears_in_one_step(
        tmp_path: Path) -> None:
    maildir = make_maildir(tmp_path / "Mail")
    deliver(maildir, dated("Mon, 05 Jan 2026", b"old.pdf"))
    deliver(maildir, dated("Wed, 07 Jan 2026", b"new.pdf"))
    deliver(maildir, dated("Fri, 09 Jan 2026", b"newest.pdf"))
    data = tmp_path / "data"
    config = tmp_path / "retainer.toml"
    config.write_text(f"""
[agent]
data_dir = {json.dumps(str(data))}
owner_emails = ["owner@example.com"]
review_since = 2026-01-06

[[contractors]]
name = "Maria Lopez"
emails = ["maria@example.com"]

[[sources]]
name = "mail"
platform = "maildir"
[sources.settings]
path = {json.dumps(str(maildir))}
""")
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    assert run(config, "sync", cwd=cwd, home=home).returncode == 0

    def queue() -> list[str]:
        listed = run(config, "review", "list", "--json", cwd=cwd, home=home)
        assert listed.returncode == 0, listed.stderr
        return [row["filename"] for row in json.loads(listed.stdout)]

    assert queue() == ["new.pdf", "newest.pdf"]  # old.pdf: stored, already handled
    done = run(config, "review", "approve", "--all", "--before", "2026-01-08", "--json",
               cwd=cwd, home=home)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["approved"]) == 1
    assert queue() == ["newest.pdf"]
    refused = run(config, "review", "approve", cwd=cwd, home=home)
    assert refused.returncode != 0 and "which deliverable" in refused.stderr
