"""The dashboard's pages and actions over HTTP (no browser): previews, the contractor page and
its new task, templates, sources, the token file, and writes that share the store's lock."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from markupsafe import escape
from PIL import Image

from agent.demo import pdf_bytes, png_bytes
from agent.models import Attachment, Identity, Message
from agent.store import Store
from agent.store import workflow as wf
from agent.web import parse_address
from agent.web.security import csrf_for
from tests.support.workflow_mail import (
    OWNER,
    SmtpSink,
    _deliver,
    _mail,
    run,
    switch_to_imap,
    synced,
)
from tests.web.conftest import Dashboard, start


def _post(dash: Dashboard, http: requests.Session, path: str, **data: str) -> requests.Response:
    return http.post(dash.base + path, data=dict(data, csrf=csrf_for(dash.token)), timeout=30,
                     allow_redirects=True)


def _add_files(dash: Dashboard) -> dict[str, str]:
    import random

    store = dash.store()
    who = Identity("email", "maria@example.com", name="Maria Lopez")
    files = [("poster.png", png_bytes(random.Random(1), 640, 400)),
             ("brief.pdf", pdf_bytes("Spring brief", ["Line one", "Line two"])),
             ("broken.pdf", b"%PDF-1.4 this is not a PDF at all"),
             ("notes.txt", b"plain <b>text</b> & more")]
    with store.writing():
        store.commit_page("mail", "maildir", [Message(
            f"<files-{i}@example.com>", datetime.now(UTC), who, subject="Files",
            attachments=(Attachment(name, data=data),)) for i, (name, data) in enumerate(files)],
            owner_keys=frozenset({f"email:{OWNER}"}))
    return {d["filename"]: d["id"] for d in dash.store().deliverables()}


def test_token_file_is_private_and_stable(dashboard: Dashboard) -> None:
    token_file = dashboard.data_dir / "web" / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert (dashboard.data_dir / "web").stat().st_mode & 0o777 == 0o700
    assert token_file.read_text().strip() == dashboard.token and len(dashboard.token) >= 40
    assert requests.get(dashboard.base + "/report", timeout=10).status_code == 401
    bearer = {"Authorization": f"Bearer {dashboard.token}"}
    assert requests.get(dashboard.base + "/report", headers=bearer, timeout=10).status_code == 200


def test_previews_are_re_encoded_images(dashboard: Dashboard) -> None:
    ids = _add_files(dashboard)
    http = dashboard.session()
    for name, width in (("poster.png", 320), ("brief.pdf", 320)):
        response = http.get(f"{dashboard.base}/preview/{ids[name]}.png", timeout=30)
        assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "PNG" and image.width == width
    big = http.get(f"{dashboard.base}/preview/{ids['poster.png']}.png?size=big", timeout=30)
    assert Image.open(io.BytesIO(big.content)).width == 640  # never scaled up
    broken = http.get(f"{dashboard.base}/preview/{ids['broken.pdf']}.png", timeout=30)
    assert broken.status_code == 200 and broken.content.startswith(b"\x89PNG")  # a placeholder
    page = http.get(f"{dashboard.base}/queue/{ids['notes.txt']}", timeout=30).text
    assert "plain &lt;b&gt;text&lt;/b&gt; &amp; more" in page


def test_filters_and_overdue(dashboard: Dashboard) -> None:
    http = dashboard.session()
    maria = dashboard.store().find_contractor("Maria Lopez")["id"]
    page = http.get(f"{dashboard.base}/queue", params={"contractor": maria}, timeout=10).text
    assert "logo-spring.png" in page and "blog-freelancer.docx" not in page
    page = http.get(f"{dashboard.base}/queue", params={"overdue": "1"}, timeout=10).text
    assert "logo-spring.png" in page and "checkout-design.pdf" not in page  # 2 days old
    page = http.get(f"{dashboard.base}/queue", params={"kind": "pdf"}, timeout=10).text
    assert "landing-mockup.pdf" in page and "logo-spring.png" not in page
    items = re.findall(r'data-id="(d_[0-9a-f]+)"', http.get(f"{dashboard.base}/queue",
                                                              timeout=10).text)
    queue = [d["id"] for d in dashboard.store().deliverables(unreviewed=True)]
    assert items == queue  # oldest first, as `retainer review` lists them


def test_contractor_page_and_a_new_task_from_a_template(
        dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch) -> None:
    http = dashboard.session()
    run(dashboard.config, "instructions", "add", "logo-brief", "--text",
        "Hi {{first_name}},\n\nPlease do {{task}} by {{deadline}}.\n", "--skill", "logo")
    maria = dashboard.store().find_contractor("Maria Lopez")["id"]
    page = http.get(f"{dashboard.base}/contractors/{maria}", timeout=10).text
    for text in ("email", "maria@example.com", "Logo for the spring sale", "logo-spring.png",
                 "Give them a new task", "logo-brief"):
        assert text in page
    preview = _post(dashboard, http, f"/contractors/{maria}/task", template="logo-brief",
                    task="Summer logo", sets="deadline=Friday", mode="record")
    assert "Hi Maria,\n\nPlease do Summer logo by Friday." in preview.text.replace("\r", "")
    assert not wf.sent_instructions(dashboard.store())  # a preview records nothing
    missing = _post(dashboard, http, f"/contractors/{maria}/task", template="logo-brief",
                    task="Summer logo", mode="record")
    assert missing.status_code == 400 and "--set deadline=" in missing.text
    monkeypatch.setenv("RETAINER_TEST_IMAP_PASSWORD", "unused")
    with SmtpSink() as sink:
        switch_to_imap(dashboard.config, sink.port)
        preview = _post(dashboard, http, f"/contractors/{maria}/task", template="logo-brief",
                        task="Summer logo", sets="deadline=Friday", mode="send")
        assert "To:       Maria Lopez &lt;maria@example.com&gt;" in preview.text
        assert sink.messages == []
        done = _post(dashboard, http, f"/contractors/{maria}/task", template="logo-brief",
                     task="Summer logo", sets="deadline=Friday", mode="send", confirm="1")
        assert "sent to Maria Lopez" in done.text
    assert len(sink.messages) == 1 and b"Please do Summer logo by Friday." in sink.messages[0][2]
    sent = wf.sent_instructions(dashboard.store())
    assert [(s["template"], s["task"], s["sent"]) for s in sent] == [
        ("logo-brief", "Summer logo", True)]
    page = http.get(f"{dashboard.base}/contractors/{maria}", timeout=10).text
    assert "logo-brief v1: Summer logo" in page
    changed = _post(dashboard, http, f"/contractors/{maria}/status", status="core")
    assert "Maria Lopez is now core" in changed.text
    assert dashboard.store().find_contractor(maria)["status"] == "core"


def test_templates_are_edited_in_versions(dashboard: Dashboard) -> None:
    http = dashboard.session()
    made = _post(dashboard, http, "/templates", new="1", name="copy-brief", skill="copywriting",
                 subject="{{task}}", text="# {{task}}\r\n\r\n<script>alert(1)</script> Hi")
    assert "copy-brief: version 1 saved" in made.text
    assert "&lt;script&gt;" in made.text and "<script>alert" not in made.text
    edited = _post(dashboard, http, "/templates", name="copy-brief", text="# {{task}}\n\nHello")
    assert "version 2 saved" in edited.text
    doc = wf.template(dashboard.store(), "copy-brief")
    assert [v["text"] for v in doc["versions"]] == [
        "# {{task}}\n\n<script>alert(1)</script> Hi", "# {{task}}\n\nHello"]
    old = http.get(f"{dashboard.base}/templates/copy-brief", params={"version": 1}, timeout=10)
    assert "v1 of 2" in old.text
    again = _post(dashboard, http, "/templates", new="1", name="copy-brief", text="x")
    assert again.status_code == 400 and "exists" in again.text


def test_sources_show_state_and_sync_now(dashboard: Dashboard) -> None:
    http = dashboard.session()
    page = http.get(f"{dashboard.base}/sources", timeout=10).text
    assert "mail" in page and "maildir" in page and "Sync now" in page
    maildir = dashboard.config.read_text().split('path = "')[1].split('"')[0]
    _deliver(Path(maildir), _mail("sam@example.com", "Sam Chen", OWNER, "One more",
                                  datetime.now(UTC), "<late@example.com>", "Here",
                                  attachment=("late.docx", b"late work")), "late")
    started = _post(dashboard, http, "/sources/mail/sync")
    assert "Syncing mail in the background" in started.text
    for _ in range(100):
        if dashboard.server.ctx.syncing.get("mail") != "running":
            break
        time.sleep(0.1)
    assert dashboard.server.ctx.syncing["mail"] == "done"
    assert "late.docx" in http.get(f"{dashboard.base}/queue", timeout=10).text


def test_approving_while_a_sync_writes_loses_nothing(tmp_path: Path) -> None:
    """Dashboard writes and a syncing process take the same file lock."""
    config = synced(tmp_path)
    data = tmp_path / "data"
    server = start(config, data)
    try:
        base = f"http://127.0.0.1:{server.ctx.port}"
        http = requests.Session()
        http.get(server.url, timeout=10)
        ids = [d["id"] for d in Store(data).deliverables(unreviewed=True)]
        stop = threading.Event()

        def writer() -> None:  # another process's worth of writes: new mail, page by page
            store = Store(data)
            who = Identity("email", "sam@example.com", name="Sam Chen")
            n = 0
            while not stop.is_set():
                with store.writing():
                    store.commit_page("mail", "maildir", [Message(
                        f"<busy-{n}@example.com>", datetime.now(UTC), who, subject=f"busy {n}")],
                        owner_keys=frozenset({f"email:{OWNER}"}))
                n += 1
                time.sleep(0.02)  # a sync fetches between pages (a tight loop starves filelock)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for i, did in enumerate(ids):
                response = http.post(f"{base}/queue/{did}/review", timeout=30, data={
                    "action": "approve", "rating": str(1 + i % 5), "csrf": csrf_for(server.ctx.token)})
                assert response.status_code == 200
        finally:
            stop.set()
            thread.join()
        store = Store(data)
        assert not store.deliverables(unreviewed=True)
        assert len(wf.review_events(store)) == len(ids)
        busy = [m for m in store.messages() if m["subject"].startswith("busy ")]
        assert len({m["subject"] for m in busy}) == len(busy) > 0
    finally:
        server.close()


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_address("8766") == ("127.0.0.1", 8766)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match="not an address"):
        parse_address("localhost:http")


def _wait_for_url(proc: subprocess.Popen[str], pattern: str = r"http://\S+") -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        found = re.search(pattern, line)
        if found:
            return found.group(0)
    raise AssertionError("no URL printed")


def _cli(*args: str, sigint: signal.Handlers = signal.SIG_DFL) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "agent", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


def test_serve_prints_a_loopback_url_with_the_token(tmp_path: Path) -> None:
    config = synced(tmp_path)
    proc = _cli("--config", str(config), "serve", "--port", "0")
    try:
        url = _wait_for_url(proc)
        assert url.startswith("http://127.0.0.1:") and "?token=" in url
        token = (tmp_path / "data" / "web" / "token").read_text().strip()
        assert url.endswith(token)
        assert requests.get(url.split("?")[0] + "queue", timeout=10).status_code == 401
        assert "logo-spring.png" in requests.get(url, timeout=10).text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def test_ctrl_c_stops_serve_started_with_sigint_ignored(tmp_path: Path) -> None:
    """A shell starts a background job with SIGINT ignored; `kill -INT` (or Ctrl-C once
    it is brought back) still stops the dashboard, as it stops `retainer run`."""
    config = synced(tmp_path)
    proc = _cli("--config", str(config), "serve", "--port", "0", sigint=signal.SIG_IGN)
    try:
        _wait_for_url(proc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0


def test_run_serves_the_dashboard_when_the_config_says_so(tmp_path: Path) -> None:
    import socket

    config = synced(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = config.read_text().replace("[agent]\n", f'[agent]\nweb = "127.0.0.1:{port}"\n', 1)
    config.write_text(text)
    proc = _cli("--config", str(config), "run")
    try:
        url = _wait_for_url(proc, r"dashboard: (http://\S+)")
        assert f"127.0.0.1:{port}" in url and "token" not in url.split("(")[0]
        token = (tmp_path / "data" / "web" / "token").read_text().strip()
        ok = requests.get(f"http://127.0.0.1:{port}/sources?token={token}", timeout=10)
        assert ok.status_code == 200 and "maildir" in ok.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_demo_serve_opens_the_dashboard_on_demo_history(tmp_path: Path) -> None:
    proc = _cli("demo", "--dir", str(tmp_path / "demo"), "--serve", "--port", "0")
    try:
        url = _wait_for_url(proc, r"http://127\.0\.0\.1:\d+/\?token=\S+")
        http = requests.Session()
        assert http.get(url, timeout=30).status_code == 200
        base = url.split("/?")[0]
        report = http.get(base + "/report", timeout=30).text
        assert "Average rating" in report and "<b>\u2013</b>" not in report.split("Waiting")[0]
        roster = http.get(base + "/contractors", timeout=30).text
        assert "Maria Lopez" in roster and "4." in roster
        svg = http.get(base + "/report/latency.svg", timeout=30)
        assert svg.headers["Content-Type"].startswith("image/svg+xml")
        assert svg.text.count('class="bar"') >= 4
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_report_page_shows_the_figures_of_retainer_report(dashboard: Dashboard) -> None:
    http = dashboard.session()
    ids = [d["id"] for d in dashboard.store().deliverables(unreviewed=True)]
    for did, rating in zip(ids[:4], (5, 4, 2, 3), strict=True):
        _post(dashboard, http, f"/queue/{did}/review", action="approve", rating=str(rating),
              cost="120")
    doc = json.loads(run(dashboard.config, "report", "--json").stdout)
    page = http.get(f"{dashboard.base}/report", timeout=10).text
    totals = doc["totals"]
    assert f"<b>{totals['deliverables']}</b>" in page
    assert f"<b>{totals['average_rating']:.2f}</b>" in page
    assert f"<b>{totals['spend']:,.0f}</b>" in page
    assert f"<b>{totals['unreviewed']}</b>" in page
    for row in doc["contractors"]:
        if row["deliverables"]:
            assert f">{escape(row['name'])}</a>" in page  # as Jinja escapes it
    for chart, marker in (("scatter", "spend-quality"), ("latency", "review-latency")):
        svg = http.get(f"{dashboard.base}/report/{chart}.svg", timeout=10)
        assert svg.status_code == 200 and marker in svg.text
        assert "default-src 'none'" in svg.headers["Content-Security-Policy"]
    assert http.get(f"{dashboard.base}/report", params={"since": "lots"},
                    timeout=10).status_code == 400
