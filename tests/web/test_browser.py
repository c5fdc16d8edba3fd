"""The dashboard in a real browser (the system Chromium through Playwright): the review
queue by keyboard and by mouse, replies that arrive over SMTP, bulk approve, promoting a
candidate, and hostile content that never runs."""

from __future__ import annotations

import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent.store import workflow as wf
from tests.support.workflow_mail import SmtpSink, switch_to_imap
from tests.web.conftest import (
    HOSTILE_FILE,
    HOSTILE_NAME,
    HOSTILE_SUBJECT,
    HTML_FILE,
    MARKDOWN_FILE,
    SVG_FILE,
    Dashboard,
    Watched,
)


def _statuses(dash: Dashboard) -> dict[str, dict[str, Any]]:
    return {d["filename"]: d for d in dash.store().deliverables()}


def _selected(page: Any) -> str:
    return str(page.eval_on_selector(".queue .item.selected", "el => el.dataset.id"))


def test_no_token_no_page(dashboard: Dashboard, page: Watched) -> None:
    p = page.page
    p.goto(dashboard.base + "/queue")
    assert "needs its access token" in p.content()
    assert "logo-spring.png" not in p.content()
    p.goto(dashboard.base + "/queue?token=wrong-" + dashboard.token[:10])
    assert "needs its access token" in p.content()
    p.goto(dashboard.url)  # the printed URL: trades the token for a cookie, drops it from the URL
    assert p.url.rstrip("/").endswith("/queue") and "token=" not in p.url
    cookie = next(c for c in p.context.cookies() if c["name"].startswith("retainer_"))
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    p.goto(dashboard.base + "/contractors")  # the cookie is enough from now on
    assert "Maria Lopez" in p.content()


def test_keyboard_through_the_queue(dashboard: Dashboard, page: Watched) -> None:
    p = page.page
    p.goto(dashboard.url)
    ids = p.eval_on_selector_all(".queue .item", "els => els.map(e => e.dataset.id)")
    assert len(ids) >= 8
    assert _selected(p) == ids[0]  # the oldest is selected on load
    p.keyboard.press("j")
    p.keyboard.press("j")
    p.keyboard.press("k")
    assert _selected(p) == ids[1]
    target = ids[1]
    p.keyboard.press("4")
    with p.expect_navigation():
        p.keyboard.press("a")
    assert "approved, 4/5" in p.inner_text(".flash")
    doc = dashboard.store().deliverable(target)
    assert doc["review_status"] == "approved" and doc["review"]["rating"] == 4
    assert target not in p.eval_on_selector_all(".queue .item", "els => els.map(e => e.dataset.id)")
    # the selection stays where the reviewed item was: on the one after it
    ids = p.eval_on_selector_all(".queue .item", "els => els.map(e => e.dataset.id)")
    assert _selected(p) == ids[1]
    # ask for changes with feedback, keys only: f to type, Escape to leave the box, c
    p.keyboard.press("j")
    target = _selected(p)
    assert target == ids[2]
    p.keyboard.press("2")
    p.keyboard.press("f")
    p.keyboard.type("Colours are off; a is not a shortcut while typing")
    p.keyboard.press("Escape")
    with p.expect_navigation():
        p.keyboard.press("c")
    doc = dashboard.store().deliverable(target)
    assert doc["review_status"] == "changes_requested"
    assert doc["review"]["rating"] == 2
    assert doc["review"]["feedback"] == "Colours are off; a is not a shortcut while typing"
    assert not page.dialogs and not page.errors


def test_mouse_approve_shows_the_exact_reply_then_sends_it(
        dashboard: Dashboard, page: Watched, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAINER_TEST_IMAP_PASSWORD", "not-used-for-plain-local-smtp")
    p = page.page
    with SmtpSink() as sink:
        switch_to_imap(dashboard.config, sink.port)
        p.goto(dashboard.url)
        item = p.locator(".queue .item", has_text="logo-spring.png")
        item.locator(".stars label", has_text="5").click()
        item.locator("textarea[name=feedback]").fill("Lovely, the sun is perfect.")
        item.locator("input[name=send]").check()
        item.get_by_role("button", name="Approve").click()
        reply = p.inner_text("pre.outgoing")  # the confirmation shows exactly what goes out
        assert "To:       Maria Lopez <maria@example.com>" in reply
        assert "Subject:  Re: Logo for the spring sale" in reply
        assert "In-Reply-To: <work-t1@example.com>" in reply
        assert "Lovely, the sun is perfect." in reply and "logo-spring.png: approved (5/5)" in reply
        assert sink.messages == []  # nothing sent, nothing recorded yet
        assert _statuses(dashboard)["logo-spring.png"]["review_status"] == "unreviewed"
        p.get_by_role("button", name="Send it").click()
        assert "the reply was sent" in p.inner_text(".flash")
    assert len(sink.messages) == 1
    _, rcpts, raw = sink.messages[0]
    msg = message_from_bytes(raw)
    assert rcpts == ["maria@example.com"] and msg["In-Reply-To"] == "<work-t1@example.com>"
    body = msg.get_payload(decode=True).decode().replace("\r\n", "\n")
    assert body.strip() == reply.split("\n\n", 1)[1].strip()  # what was shown is what went
    doc = _statuses(dashboard)["logo-spring.png"]
    assert doc["review_status"] == "approved" and doc["review"]["rating"] == 5
    assert doc["review"]["sent"][0]["remote_id"] == msg["Message-ID"]
    assert [s["kind"] for s in wf.outbox(dashboard.store())] == ["feedback"]


def test_bulk_approve_a_backlog(dashboard: Dashboard, page: Watched) -> None:
    p = page.page
    p.goto(dashboard.url)
    names = ["logo-spring.png", "blog-freelancer.docx", "landing-mockup.pdf"]
    for name in names:
        p.locator(".queue .item", has_text=name).locator(".pick input").check()
    p.select_option("#bulk select[name=rating]", "4")
    p.get_by_role("button", name="Approve ticked").click()
    assert "Approved 3 items" in p.inner_text(".flash")
    docs = _statuses(dashboard)
    for name in names:
        assert docs[name]["review_status"] == "approved" and docs[name]["review"]["rating"] == 4
    assert docs["product-copy.docx"]["review_status"] == "unreviewed"
    # "tick all" (JavaScript) then approve: the rest of the page goes
    p.get_by_role("button", name="Tick all on this page").click()
    p.get_by_role("button", name="Approve ticked").click()
    assert "Nothing to review" in p.content()
    assert not dashboard.store().deliverables(unreviewed=True)


def test_promote_and_ignore_candidates(dashboard: Dashboard, page: Watched) -> None:
    p = page.page
    p.goto(dashboard.base + "/candidates?token=" + dashboard.token)
    p.locator("tr", has_text="news@shop.example").get_by_role("button", name="Ignore").click()
    assert "email:news@shop.example is ignored" in p.inner_text(".flash")
    assert p.locator("tr", has_text="news@shop.example").count() == 0
    p.get_by_role("link", name="Show 1 ignored").click()
    p.locator("tr", has_text="news@shop.example").get_by_role("button", name="Show again").click()
    assert "shown again" in p.inner_text(".flash")
    row = p.locator("tr", has_text="news@shop.example")
    row.locator("input[name=name]").fill("Shop News Team")
    row.locator("input[name=skills]").fill("newsletters, promotions")
    row.locator("select[name=status]").select_option("bench")
    row.get_by_role("button", name="Promote").click()
    assert "Shop News Team is on the roster as bench" in p.inner_text(".flash")
    doc = dashboard.store().find_contractor("news@shop.example")
    assert doc["name"] == "Shop News Team" and doc["status"] == "bench"
    assert doc["skills"] == ["newsletters", "promotions"]
    assert "news@shop.example" not in p.inner_text("main")
    p.goto(dashboard.base + "/contractors")
    assert "Shop News Team" in p.inner_text("table.roster")


def test_hostile_names_subjects_files_never_run(dashboard: Dashboard, page: Watched) -> None:
    p = page.page
    p.goto(dashboard.url)
    docs = _statuses(dashboard)
    mallory = dashboard.store().find_contractor("mallory@evil.example")["id"]
    visits = ["/queue", "/contractors", f"/contractors/{mallory}", "/report", "/candidates",
              "/sources", "/templates", "/contractors?task=%3Cscript%3Ealert(1)%3C/script%3E"]
    visits += [f"/queue/{docs[name]['id']}" for name in (HTML_FILE, SVG_FILE, MARKDOWN_FILE)]
    visits.append(f"/queue/{docs[next(n for n in docs if n.endswith('.png') and 'img' in n)]['id']}")
    for path in visits:
        p.goto(dashboard.base + path)
        p.wait_for_load_state("load")
        assert p.evaluate("window.__pwned") is None, path
    queue_text = p.goto(dashboard.base + "/queue") and p.inner_text("main")
    assert HOSTILE_NAME in queue_text  # shown as text, escaped
    stored_file = next(n for n in docs if "onerror" in n)
    assert stored_file in queue_text or HOSTILE_FILE in queue_text
    p.goto(dashboard.base + f"/contractors/{mallory}")
    assert HOSTILE_SUBJECT in p.inner_text("main") and "<b>xss</b>" in p.inner_text("main")
    p.goto(dashboard.base + f"/queue/{docs[MARKDOWN_FILE]['id']}")
    rendered = p.inner_html(".doc-preview")
    assert "<h1>Notes</h1>" in rendered and "<strong>bold</strong>" in rendered
    assert "<script" not in rendered and 'href="javascript' not in rendered
    assert "&lt;script&gt;" in rendered  # raw HTML in Markdown is shown as text
    assert p.locator(".doc-preview script, .doc-preview img").count() == 0
    # the HTML and SVG deliverables themselves: a download, never a page of this origin
    for name in (HTML_FILE, SVG_FILE):
        p.goto(dashboard.base + f"/queue/{docs[name]['id']}")
        with p.expect_download() as info:
            p.get_by_role("link", name="Download").click()
        assert info.value.suggested_filename == name
        assert p.evaluate("window.__pwned") is None
    assert not page.dialogs, page.dialogs
    assert not page.errors, page.errors
    assert not [c for c in page.console if "alert" in c or "pwned" in c]


def test_file_and_preview_headers(dashboard: Dashboard) -> None:
    http = dashboard.session()
    docs = _statuses(dashboard)
    for name in (HTML_FILE, SVG_FILE):
        response = http.get(f"{dashboard.base}/files/{docs[name]['id']}", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Content-Disposition"].startswith("attachment")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in response.headers["Content-Security-Policy"]
    assert http.get(f"{dashboard.base}/preview/{docs[SVG_FILE]['id']}.png",
                    timeout=10).status_code == 404  # SVG is never previewed as an image
    page_headers = http.get(f"{dashboard.base}/queue", timeout=10).headers
    csp = page_headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert page_headers["X-Frame-Options"] == "DENY"


class _Attacker(BaseHTTPRequestHandler):
    """Another site on this computer whose page posts a form to the dashboard."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<form id=f method=post action="{self.target}">'
                '<input name=action value=approve><input name=rating value=1>'
                '<input name=csrf value=guess></form>'
                "<script>document.getElementById('f').submit()</script>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the browser drops its connection when the page navigates away


def test_cross_site_form_post_is_refused(dashboard: Dashboard, page: Watched) -> None:
    p = page.page
    p.goto(dashboard.url)  # the owner is signed in (holds the cookie)
    victim = _statuses(dashboard)["logo-spring.png"]["id"]
    _Attacker.target = f"{dashboard.base}/queue/{victim}/review"
    attacker = _QuietServer(("127.0.0.1", 0), _Attacker)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        with p.expect_response(lambda r: r.url.endswith("/review")) as info:
            p.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
        assert info.value.status == 403
    finally:
        attacker.shutdown()
        attacker.server_close()
    assert _statuses(dashboard)["logo-spring.png"]["review_status"] == "unreviewed"
    # and without a browser: the cookie alone, or a foreign Origin, or a foreign Host
    http = dashboard.session()
    url = f"{dashboard.base}/queue/{victim}/review"
    assert http.post(url, data={"action": "approve"}, timeout=10).status_code == 403
    from agent.web.security import csrf_for

    good = {"action": "approve", "csrf": csrf_for(dashboard.token)}
    assert http.post(url, data=good, headers={"Origin": "http://evil.example"},
                     timeout=10).status_code == 403
    assert http.post(url, data=good, headers={"Sec-Fetch-Site": "cross-site"},
                     timeout=10).status_code == 403
    assert http.get(f"{dashboard.base}/queue", headers={"Host": "evil.example:80"},
                    timeout=10).status_code == 400
    assert _statuses(dashboard)["logo-spring.png"]["review_status"] == "unreviewed"
    assert http.post(url, data=good, allow_redirects=False, timeout=10).status_code == 303
    assert _statuses(dashboard)["logo-spring.png"]["review_status"] == "approved"


def test_everything_works_without_javascript(dashboard: Dashboard, browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        p = context.new_page()
        p.set_default_timeout(10_000)
        p.goto(dashboard.url)
        assert p.locator("[data-tick-all]").is_hidden()  # a JavaScript-only helper is hidden
        item = p.locator(".queue .item", has_text="blog-freelancer.docx")
        item.locator(".stars label", has_text="3").click()
        item.locator("textarea[name=feedback]").fill("Shorter intro, please.")
        item.get_by_role("button", name="Request changes").click()
        assert "changes requested, 3/5" in p.inner_text(".flash")
        p.locator(".queue .item", has_text="landing-mockup.pdf").locator(".pick input").check()
        p.get_by_role("button", name="Approve ticked").click()
        assert "Approved 1 item" in p.inner_text(".flash")
        p.goto(dashboard.base + "/report?since=30d")
        p.get_by_role("button", name="Show").click()
        assert "Delegation report" in p.inner_text("h1")
    finally:
        context.close()
    docs = _statuses(dashboard)
    assert docs["blog-freelancer.docx"]["review_status"] == "changes_requested"
    assert docs["blog-freelancer.docx"]["review"]["feedback"] == "Shorter intro, please."
    assert docs["landing-mockup.pdf"]["review_status"] == "approved"
