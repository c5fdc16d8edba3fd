"""Fixtures for the dashboard tests: a synced store with hostile content, the dashboard on a
real waitress server, and the system Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.models import Attachment, Identity, Message
from agent.plugins import make_plugin_host
from agent.store import Store
from agent.web import Server, make_server
from tests.support.workflow_mail import OWNER, host_plugins, synced

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

HOSTILE_NAME = '<script>window.__pwned=1;alert("name")</script>Mallory'
HOSTILE_SUBJECT = '"><img src=x onerror="window.__pwned=2;alert(2)">Invoice'
HOSTILE_FILE = '<img src=x onerror=alert(3)>.png'
HTML_FILE = "report.html"
SVG_FILE = "chart.svg"
HTML_BODY = (b"<!doctype html><html><body><script>window.__pwned=4;alert('html')</script>"
             b"<img src=x onerror=alert(5)></body></html>")
SVG_BODY = (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(6)">'
            b"<script>window.__pwned=7;alert('svg')</script><circle r='4'/></svg>")
MARKDOWN_FILE = "notes.md"
MARKDOWN_BODY = (b"# Notes\n\n<script>alert(8)</script>\n\n[click](javascript:alert(9))\n\n"
                 b"**bold** and <img src=x onerror=alert(10)>\n")


@dataclass
class Dashboard:
    server: Server
    config: Path
    data_dir: Path

    @property
    def token(self) -> str:
        return self.server.ctx.token

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.ctx.port}"

    @property
    def url(self) -> str:
        return self.server.url

    def store(self) -> Store:
        return Store(self.data_dir)

    def session(self) -> requests.Session:
        """An HTTP client holding the access cookie."""
        http = requests.Session()
        response = http.get(self.url, timeout=10)
        assert response.status_code == 200
        return http


def add_hostile(data_dir: Path) -> None:
    """A contractor with a scripted name who sends a scripted subject and active files."""
    store = Store(data_dir)
    who = Identity("email", "mallory@evil.example", name=HOSTILE_NAME)
    now = datetime.now(UTC)
    with store.writing():
        store.add_contractor(HOSTILE_NAME, [who], skills=["<b>xss</b>"])
        records = [Message(
            f"<evil-{i}@evil.example>", now - timedelta(hours=30 - i), who, subject=HOSTILE_SUBJECT,
            text="<script>alert(11)</script>", thread_remote_id="<evil-thread@evil.example>",
            attachments=(Attachment(name, ctype, data=body),))
            for i, (name, ctype, body) in enumerate([
                (HOSTILE_FILE, "image/png", b"not really a png"),
                (HTML_FILE, "text/html", HTML_BODY),
                (SVG_FILE, "image/svg+xml", SVG_BODY),
                (MARKDOWN_FILE, "text/markdown", MARKDOWN_BODY)])]
        store.commit_page("mail", "maildir", records, owner_keys=frozenset({f"email:{OWNER}"}))


def start(config: Path, data_dir: Path) -> Server:
    host = make_plugin_host(entrypoints=False, extra=host_plugins())
    return make_server(config, data_dir, lambda: host, port=0).start()


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    config = synced(tmp_path)
    add_hostile(tmp_path / "data")
    server = start(config, tmp_path / "data")
    try:
        yield Dashboard(server, config, tmp_path / "data")
    finally:
        server.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or os.path.exists(CHROMIUM), "install chromium (apt)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Watched:
    page: Any
    dialogs: list[str]
    console: list[str]
    errors: list[str]


@pytest.fixture
def page(browser: Any) -> Iterator[Watched]:
    """A fresh browser context and page; every dialog and console message is recorded
    (a dialog is dismissed, so a script that ran is seen, never blocks)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    watched = Watched(page, [], [], [])

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda m: watched.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: watched.errors.append(str(e)))
    page.set_default_timeout(10_000)
    try:
        yield watched
    finally:
        context.close()
