"""A realistic owner's mailbox for the workflow tests, synced for real through the Maildir
source: briefs the owner sent (``.Sent``), contractors' replies with their files, a
newsletter from someone who is not a contractor. Dates are relative to now, so the
report's default period covers them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

import plugins.imap
import plugins.maildir
import plugins.notifiers
from agent.cli import App, build_cli
from agent.plugins import make_plugin_host

OWNER = "owner@example.com"


@dataclass(frozen=True)
class Task:
    contractor: str  # address
    name: str  # display name
    subject: str
    filename: str
    brief_days_ago: float
    hours_to_deliver: float
    key: str


TASKS = [
    Task("maria@example.com", "Maria Lopez", "Logo for the spring sale", "logo-spring.png",
         40, 20, "t1"),
    Task("maria@example.com", "Maria Lopez", "Illustration for the about page",
         "about-illustration.svg", 20, 30, "t2"),
    Task("maria@example.com", "Maria Lopez", "Logo variants for social media",
         "logo-social.png", 6, 10, "t3"),
    Task("sam@example.com", "Sam Chen", "Blog post: choosing a freelancer", "blog-freelancer.docx",
         30, 50, "t4"),
    Task("sam@example.com", "Sam Chen", "Product copy for the new range", "product-copy.docx",
         12, 72, "t5"),
    Task("priya@example.com", "Priya Nair", "Landing page mockup", "landing-mockup.pdf",
         25, 40, "t6"),
    Task("priya@example.com", "Priya Nair", "Checkout page design", "checkout-design.pdf",
         2, 20, "t7"),
]

CONFIG = """
[agent]
data_dir = "{data}"
owner_emails = ["{owner}"]
review_overdue = "3d"
review_since = false  # the sample work is dated before today: all of it is in the queue

[[contractors]]
name = "Maria Lopez"
emails = ["maria@example.com"]
skills = ["logo", "illustration"]
rate = 40

[[contractors]]
name = "Sam Chen"
emails = ["sam@example.com"]
skills = ["copywriting", "blog"]
rate = 30

[[contractors]]
name = "Priya Nair"
emails = ["priya@example.com"]
skills = ["web design", "landing page"]
status = "core"

[[sources]]
name = "mail"
platform = "maildir"
[sources.settings]
path = "{maildir}"
{extra}
"""


def _deliver(folder: Path, raw: bytes, name: str) -> None:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp" / name
    tmp.write_bytes(raw)
    os.rename(tmp, folder / "cur" / f"{name}:2,S")


def _mail(sender: str, sender_name: str, to: str, subject: str, when: datetime, msgid: str,
          body: str, *, reply_to: str = "", attachment: tuple[str, bytes] | None = None
          ) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"{sender_name} <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = msgid
    if reply_to:
        msg["In-Reply-To"] = reply_to
        msg["References"] = reply_to
    msg.set_content(body)
    if attachment:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def mailbox_messages(now: datetime | None = None) -> list[tuple[str, str, bytes]]:
    """Every mail of the scenario as ``(folder, name, raw)``; folder "" is the inbox."""
    now = now or datetime.now(UTC)
    out: list[tuple[str, str, bytes]] = []
    for task in TASKS:
        brief_at = now - timedelta(days=task.brief_days_ago)
        brief_id = f"<brief-{task.key}@owner.example.com>"
        out.append(("Sent", f"brief-{task.key}", _mail(
            OWNER, "Owner", f"{task.name} <{task.contractor}>", task.subject, brief_at,
            brief_id, f"Hi, could you do this: {task.subject}?")))
        done_at = brief_at + timedelta(hours=task.hours_to_deliver)
        out.append(("", f"work-{task.key}", _mail(
            task.contractor, task.name, OWNER, f"Re: {task.subject}", done_at,
            f"<work-{task.key}@{task.contractor.split('@')[1]}>", "Here it is, see attached.",
            reply_to=brief_id,
            attachment=(task.filename, f"{task.key} file content".encode() * 20))))
    out.append(("", "news-1", _mail("news@shop.example", "Shop News", OWNER, "Sale!",
                                    now - timedelta(days=3), "<news-1@shop.example>",
                                    "Everything half price.")))
    return out


def build_mailbox(root: Path, now: datetime | None = None) -> Path:
    """Write the mailbox as a Maildir (``.Sent`` for the owner's briefs); return its root."""
    for folder, name, raw in mailbox_messages(now):
        _deliver(root / f".{folder}" if folder else root, raw, name)
    return root


def make_workflow_config(tmp_path: Path, extra: str = "") -> Path:
    maildir = build_mailbox(tmp_path / "Mail")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(data=tmp_path / "data", owner=OWNER, maildir=maildir,
                                    extra=extra))
    return config


def host_plugins() -> list[Any]:
    return [plugins.maildir, plugins.imap, plugins.notifiers]


def run(config: Path, *args: str, expect: int = 0, input: str | None = None,
        extra_plugins: tuple[Any, ...] = ()) -> Result:
    """Run the real ``retainer`` command line (plugin commands and workflow commands added)."""
    app = App(config, False, 0)
    app._host = make_plugin_host(entrypoints=False, extra=[*host_plugins(), *extra_plugins])
    group = build_cli(app)
    result = CliRunner().invoke(group, ["--config", str(config), *args], obj=app, input=input)
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def synced(tmp_path: Path, extra: str = "") -> Path:
    """A config whose store was filled by a real ``retainer sync`` of the mailbox."""
    config = make_workflow_config(tmp_path, extra)
    run(config, "sync")
    return config


class SmtpSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.controller: Any = None
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def __enter__(self) -> SmtpSink:
        import socket

        from aiosmtpd.controller import Controller

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()


IMAP_SOURCE = """
[[sources]]
name = "mail"
platform = "imap"
[sources.settings]
host = "127.0.0.1"
security = "none"
username = "owner@example.com"
password = {{ env = "RETAINER_TEST_IMAP_PASSWORD" }}
[sources.settings.smtp]
host = "127.0.0.1"
port = {port}
security = "none"
from = "Owner <owner@example.com>"
"""


def switch_to_imap(config: Path, smtp_port: int) -> None:
    """The owner moves source "mail" from a local Maildir copy to the IMAP account itself
    (same mailbox, same store), with SMTP for replies."""
    text = config.read_text()
    head = text[:text.index("[[sources]]")]
    config.write_text(head + IMAP_SOURCE.format(port=smtp_port))
