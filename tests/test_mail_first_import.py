"""First import of an old mailbox: `review_since` and `review approve --all --before`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from subprocess import CompletedProcess

from agent.store import Store
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


# -- the default cut-off: the day of the first sync ----------------------------------------


def setup(tmp_path: Path, since: str | None
          ) -> tuple[Path, Path, Callable[..., CompletedProcess[str]]]:
    """A mailbox, a config (``review_since = since`` unless None) and a CLI runner."""
    maildir = make_maildir(tmp_path / "Mail")
    config = tmp_path / "retainer.toml"
    write_config(config, tmp_path / "data", maildir, since)
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()

    def cli(*args: str) -> CompletedProcess[str]:
        done = run(config, *args, cwd=cwd, home=home)
        assert done.returncode == 0, done.stderr
        return done

    return maildir, config, cli


def write_config(config: Path, data: Path, maildir: Path, since: str | None) -> None:
    line = "" if since is None else f"review_since = {since}"
    config.write_text(f"""
[agent]
data_dir = {json.dumps(str(data))}
owner_emails = ["owner@example.com"]
{line}

[[contractors]]
name = "Maria Lopez"
emails = ["maria@example.com"]

[[sources]]
name = "mail"
platform = "maildir"
[sources.settings]
path = {json.dumps(str(maildir))}
""")


def queue(cli: Callable[..., CompletedProcess[str]]) -> list[str]:
    return [row["filename"] for row in json.loads(cli("review", "list", "--json").stdout)]


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def now_mail(name: bytes) -> bytes:
    return dated(format_datetime(datetime.now(UTC))[:16], name)


def old_mailbox(maildir: Path) -> None:
    deliver(maildir, dated("Mon, 05 Jan 2026", b"old.pdf"))
    deliver(maildir, dated("Fri, 09 Jan 2026", b"older-but-2026.pdf"))


def test_first_sync_of_an_old_mailbox_queues_nothing_old_and_new_mail_enters(
        tmp_path: Path) -> None:
    maildir, _config, cli = setup(tmp_path, None)
    old_mailbox(maildir)
    before = today()
    # nothing recorded before the first sync
    assert json.loads(cli("status", "--json").stdout)["review_since"] is None
    assert "before the day of the first sync will be" in cli("status").stdout
    cli("sync")
    after = today()
    assert queue(cli) == []  # stored, but already handled
    store = Store(tmp_path / "data")
    stored = store.deliverables()
    assert sorted(d["filename"] for d in stored) == ["old.pdf", "older-but-2026.pdf"]
    day = store.first_sync_day()
    assert day in {before, after}
    for doc in stored:
        assert doc["review_status"] == "approved"
        assert doc["review"]["auto"] == f"received before review_since {day}"
    assert json.loads(cli("status", "--json").stdout)["review_since"] == day
    assert f"work received before {day} was stored as handled" in cli("status").stdout

    # a message that arrives after the first sync enters the queue
    deliver(maildir, now_mail(b"fresh.pdf"))
    cli("sync")
    assert queue(cli) == ["fresh.pdf"]
    # ... and later syncs keep the day of the first one, whatever today is then
    assert Store(tmp_path / "data").first_sync_day() == day
    with Store(tmp_path / "data").writing() as again:
        assert again.record_first_sync_day("2099-01-01") == day
        assert again.first_sync_day() == day
    deliver(maildir, dated("Tue, 06 Jan 2026", b"late-arrival-old.pdf"))
    cli("sync")
    assert queue(cli) == ["fresh.pdf"]  # old work found later is still handled


def test_a_store_that_synced_before_the_default_keeps_its_queue(tmp_path: Path) -> None:
    maildir, config, cli = setup(tmp_path, "false")
    old_mailbox(maildir)
    cli("sync")  # leaves the store as a Retainer without the default did: no cut-off
    assert Store(tmp_path / "data").first_sync_day() is None
    assert queue(cli) == ["old.pdf", "older-but-2026.pdf"]
    write_config(config, tmp_path / "data", maildir, None)  # the upgrade: no review_since
    assert "first import" not in cli("status").stdout  # its next sync keeps the queue
    deliver(maildir, dated("Tue, 06 Jan 2026", b"found-later.pdf"))
    cli("sync")
    assert Store(tmp_path / "data").first_sync_day() == ""  # recorded: none
    assert queue(cli) == ["old.pdf", "found-later.pdf", "older-but-2026.pdf"]
    assert json.loads(cli("status", "--json").stdout)["review_since"] is None
    assert "first import" not in cli("status").stdout


def test_opt_out_puts_everything_in_the_queue(tmp_path: Path) -> None:
    maildir, _config, cli = setup(tmp_path, "false")
    old_mailbox(maildir)
    cli("sync")
    cli("sync")
    assert queue(cli) == ["old.pdf", "older-but-2026.pdf"]
    assert all(d["review_status"] == "unreviewed"
               for d in Store(tmp_path / "data").deliverables())


def test_an_explicit_day_wins_over_the_recorded_one(tmp_path: Path) -> None:
    maildir, config, cli = setup(tmp_path, None)
    deliver(maildir, dated("Mon, 05 Jan 2026", b"old.pdf"))
    cli("sync")  # records today as the cut-off
    assert queue(cli) == []
    write_config(config, tmp_path / "data", maildir, "2026-01-06")
    deliver(maildir, dated("Wed, 07 Jan 2026", b"after-the-day.pdf"))
    deliver(maildir, dated("Sun, 04 Jan 2026", b"before-the-day.pdf"))
    cli("sync")
    assert queue(cli) == ["after-the-day.pdf"]
    assert json.loads(cli("status", "--json").stdout)["review_since"] == "2026-01-06"


def test_review_since_true_is_refused_with_what_to_write(tmp_path: Path) -> None:
    _maildir, config, _cli = setup(tmp_path, "true")
    checked = run(config, "config", "check", cwd=tmp_path / "work", home=tmp_path / "home")
    assert checked.returncode != 0
    assert "review_since" in checked.stderr and "false" in checked.stderr
