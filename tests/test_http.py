"""agent.http.HttpClient against a real local HTTP server (stdlib, in a thread)."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.errors import AuthError, RateLimited, SourceError, TransientError
from agent.http import (
    DownloadFailed,
    HttpClient,
    HttpStatusError,
    NotDelivered,
    parse_retry_after,
    redact_url,
)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the status line
    trickle: float = 0.0  # between body bytes


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Server:
    """Replies are queued per path; the last one repeats. Every request is logged."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with server.lock:
                    server.seen.append(
                        Seen(self.command, self.path, dict(self.headers), body, time.monotonic())
                    )
                    queue = server.replies.get(path) or [Reply(404, b'{"error":"not found"}')]
                    reply = queue.pop(0) if len(queue) > 1 else queue[0]
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if reply.trickle:
                        for byte in reply.body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(reply.trickle)
                    else:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def on(self, path: str, *replies: Reply) -> None:
        self.replies[path] = list(replies)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.stop()


def client(server: Server, **kwargs: Any) -> HttpClient:
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("backoff_cap", 0.05)
    kwargs.setdefault("rate_per_second", 1000.0)
    return HttpClient(base_url=server.url, **kwargs)


def test_json_round_trip_and_headers(server: Server) -> None:
    server.on("/api/x", Reply(body=b'{"a": [1, 2]}'))
    http = client(server, user_agent="retainer-test")
    result = http.request(
        "POST", "/api/x", json={"q": 1}, auth_header=lambda: {"Authorization": "Bearer T0K"}
    )
    assert result == {"a": [1, 2]}
    assert http.requests_made == 1
    seen = server.seen[0]
    assert seen.headers["User-Agent"] == "retainer-test"
    assert seen.headers["Authorization"] == "Bearer T0K"
    assert seen.body == b'{"q": 1}'


def test_expect_json_false_returns_response(server: Server) -> None:
    server.on("/raw", Reply(body=b"plain text"))
    response = client(server).request("GET", "raw", expect_json=False)
    assert response.status_code == 200
    assert response.text == "plain text"


def test_rate_limit_spaces_request_starts(server: Server) -> None:
    server.on("/r", Reply())
    http = client(server, rate_per_second=20.0)
    for _ in range(12):
        http.request("GET", "/r")
    times = [s.at for s in server.seen]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.05 - 0.015  # the server's clock sees loopback jitter, not the client's slots
    # no one-second window holds more than 20 (here: 12 requests take >= 0.55 s)
    assert times[-1] - times[0] >= 11 * 0.05 - 0.02


def test_rate_limit_with_injected_clock() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    http = HttpClient(base_url="http://127.0.0.1:9", rate_per_second=4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        http._wait_for_slot(stop_at=1e9)
    assert slept == [0.25, 0.25]


def test_429_with_retry_after_seconds_is_honoured(server: Server) -> None:
    server.on("/q", Reply(429, b"{}", {"Retry-After": "1"}), Reply(body=b'{"done": 1}'))
    http = client(server)
    started = time.monotonic()
    assert http.request("GET", "/q") == {"done": 1}
    assert time.monotonic() - started >= 0.95
    assert http.requests_made == 2
    assert server.seen[1].at - server.seen[0].at >= 0.95


def test_429_with_http_date(server: Server) -> None:
    when = formatdate(time.time() + 2, usegmt=True)
    server.on("/q", Reply(429, b"{}", {"Retry-After": when}), Reply())
    http = client(server)
    http.request("GET", "/q")
    assert server.seen[1].at - server.seen[0].at >= 0.9


def test_long_retry_after_raises_rate_limited(server: Server) -> None:
    server.on("/q", Reply(429, b"{}", {"Retry-After": "120"}))
    http = client(server, max_retry_after=30)
    with pytest.raises(RateLimited) as info:
        http.request("GET", "/q")
    assert info.value.retry_after == 120
    assert http.requests_made == 1


def test_429_without_header_leaves_the_rest_to_the_next_run(server: Server) -> None:
    """No Retry-After: a short backoff would only extend Upwork's one-minute block."""
    server.on("/q", Reply(429, b"{}"))
    http = client(server, max_rate_limited=3)
    with pytest.raises(RateLimited) as caught:
        http.request("GET", "/q")
    assert http.requests_made == 1
    assert caught.value.retry_after is not None and caught.value.retry_after >= 60


def test_429_without_header_waits_a_full_minute_when_allowed(server: Server) -> None:
    server.on("/q", Reply(429, b"{}"), Reply(body=b'{"ok": 1}'))
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    http = client(server, max_retry_after=120, clock=lambda: now[0], sleep=sleep)
    assert http.request("GET", "/q") == {"ok": 1}
    assert http.requests_made == 2 and sum(slept) >= 60


def test_429_storm_without_header_gives_up_as_rate_limited(server: Server) -> None:
    server.on("/q", Reply(429, b"{}"))
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    http = client(server, max_rate_limited=3, max_retry_after=120, deadline=1e6,
                  clock=lambda: now[0], sleep=sleep)
    with pytest.raises(RateLimited):
        http.request("GET", "/q")
    assert http.requests_made == 4
    gaps = [b.at - a.at for a, b in itertools.pairwise(server.seen)]
    assert len(gaps) == 3 and now[0] >= 3 * 60  # each retry a minute after the last 429


def test_5xx_retried_then_succeeds(server: Server) -> None:
    server.on("/s", Reply(502), Reply(503), Reply(body=b"[]"))
    http = client(server)
    assert http.request("GET", "/s") == []
    assert http.requests_made == 3


def test_5xx_forever_raises_transient_with_clear_message(server: Server) -> None:
    server.on("/s", Reply(500, b"boom"))
    http = client(server, max_retries=2)
    with pytest.raises(TransientError) as info:
        http.request("GET", "/s?access_token=SECRET")
    message = str(info.value)
    assert "HTTP 500" in message and "tried 3 times" in message
    assert "SECRET" not in message
    assert http.requests_made == 3


def test_timeout_retried_then_transient(server: Server) -> None:
    server.on("/slow", Reply(delay=1.0))
    http = client(server, timeout=0.2, max_retries=1)
    with pytest.raises(TransientError) as info:
        http.request("GET", "/slow")
    assert "timed out" in str(info.value)
    assert http.requests_made == 2


def test_total_deadline_stops_a_trickling_body(server: Server) -> None:
    server.on("/trickle", Reply(body=b'{"x": "' + b"a" * 200 + b'"}', trickle=0.02))
    http = client(server, timeout=1.0, deadline=0.5, max_retries=5)
    started = time.monotonic()
    with pytest.raises(TransientError):
        http.request("GET", "/trickle")
    assert time.monotonic() - started < 2.5


def test_connection_refused_is_transient() -> None:
    http = HttpClient(base_url="http://127.0.0.1:9", max_retries=1, backoff=0.01, timeout=1)
    with pytest.raises(TransientError) as info:
        http.request("GET", "/x")
    assert "connection" in str(info.value)


def test_401_maps_to_auth_error_with_hint(server: Server) -> None:
    server.on("/a", Reply(401, b'{"error":"nope"}'))
    http = client(server, auth_hint="Run `retainer auth upwork main`.")
    with pytest.raises(AuthError) as info:
        http.request("GET", "/a", auth_header=lambda: {"Authorization": "Bearer SECRET"})
    assert "retainer auth upwork main" in str(info.value)
    assert "SECRET" not in str(info.value)


def test_403_refresh_hook_called_once_and_retried(server: Server) -> None:
    server.on("/a", Reply(403), Reply(body=b'{"ok": 1}'))
    tokens = ["old"]

    def refresh() -> None:
        tokens.append("new")

    http = client(server)
    result = http.request(
        "GET", "/a", auth_header=lambda: {"Authorization": f"Bearer {tokens[-1]}"}, refresh_auth=refresh
    )
    assert result == {"ok": 1}
    assert [s.headers["Authorization"] for s in server.seen] == ["Bearer old", "Bearer new"]


def test_refresh_hook_not_looped(server: Server) -> None:
    server.on("/a", Reply(401))
    calls: list[int] = []
    http = client(server)
    with pytest.raises(AuthError):
        http.request("GET", "/a", refresh_auth=lambda: calls.append(1))
    assert calls == [1]
    assert http.requests_made == 2


def test_malformed_json_names_path_not_query(server: Server) -> None:
    server.on("/graphql", Reply(body=b'{"data": {'))
    http = client(server)
    with pytest.raises(SourceError) as info:
        http.request("POST", "/graphql?token=SECRET", json={})
    message = str(info.value)
    assert "/graphql" in message and "malformed JSON" in message
    assert "SECRET" not in message


def test_other_4xx_is_http_status_error(server: Server) -> None:
    server.on("/t", Reply(400, b'{"error":"invalid_grant","error_description":"expired"}'))
    with pytest.raises(HttpStatusError) as info:
        client(server).request("POST", "/t", data={"a": "b"})
    assert info.value.status == 400
    assert "invalid_grant" in info.value.body


def test_logs_carry_no_secrets(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    server.on("/p", Reply(500), Reply(401))
    http = client(server, log=logging.getLogger("test.http"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError):
        http.request(
            "GET",
            "/p?access_token=SECRET1",
            auth_header=lambda: {"Authorization": "Bearer SECRET2"},
            refresh_auth=lambda: None,
        )
    assert caplog.records
    text = caplog.text
    assert "SECRET1" not in text and "SECRET2" not in text


def test_download_small_file(server: Server, tmp_path: Path) -> None:
    server.on("/f", Reply(body=b"x" * 1000, headers={"Content-Type": "application/pdf"}))
    path = client(server).download(server.url + "/f", tmp_path, max_bytes=5000)
    assert path is not None and path.read_bytes() == b"x" * 1000
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent == tmp_path


def test_download_over_cap_by_content_length(server: Server, tmp_path: Path) -> None:
    server.on("/big", Reply(body=b"x" * 10_000))
    assert client(server).download("/big", tmp_path, max_bytes=5000) is None
    assert list(tmp_path.iterdir()) == []


def test_download_over_cap_while_streaming(server: Server, tmp_path: Path) -> None:
    class Chunked(Server):
        pass

    # a server that lies about nothing but sends no Content-Length: use HTTP/1.0 close-delimited
    payload = b"y" * 300_000

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        http = HttpClient(base_url=f"http://127.0.0.1:{httpd.server_port}")
        assert http.download("/stream", tmp_path, max_bytes=100_000) is None
        assert list(tmp_path.iterdir()) == []
        path = http.download("/stream", tmp_path, max_bytes=1_000_000)
        assert path is not None and path.stat().st_size == len(payload)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_follows_redirects_and_keeps_the_token_home(server: Server, tmp_path: Path) -> None:
    other = Server()  # "another host": a CDN the file is redirected to
    try:
        other.on("/cdn/f", Reply(body=b"%PDF-1.7 data", headers={"Content-Type": "application/pdf"}))
        server.on("/f", Reply(302, b"", {"Location": other.url + "/cdn/f"}))
        server.on("/own", Reply(301, b"", {"Location": "/f2"}))
        server.on("/f2", Reply(body=b"%PDF-1.7 two", headers={"Content-Type": "application/pdf"}))
        http = client(server)
        token = {"Authorization": "Bearer T0K"}
        path = http.download("/f", tmp_path, max_bytes=5000, auth_header=lambda: token,
                             expected_type="application/pdf")
        assert path is not None and path.read_bytes() == b"%PDF-1.7 data"
        assert server.seen[0].headers.get("Authorization") == "Bearer T0K"
        assert "Authorization" not in other.seen[0].headers
        again = http.download("/own", tmp_path, max_bytes=5000, auth_header=lambda: token)
        assert again is not None and again.read_bytes() == b"%PDF-1.7 two"
        assert server.seen[-1].headers.get("Authorization") == "Bearer T0K"  # same host
    finally:
        other.stop()


@pytest.mark.parametrize("status", [403, 404, 410])
def test_download_gone_is_a_permanent_download_failure(server: Server, tmp_path: Path,
                                                       status: int) -> None:
    server.on("/f", Reply(status, b'{"message": "no"}'))
    with pytest.raises(DownloadFailed) as caught:
        client(server).download("/f", tmp_path, max_bytes=5000,
                                auth_header=lambda: {"Authorization": "Bearer T"})
    assert caught.value.permanent and caught.value.status == status
    assert not isinstance(caught.value, AuthError) and "retainer auth" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_download_5xx_is_a_retryable_download_failure(server: Server, tmp_path: Path) -> None:
    server.on("/f", Reply(503))
    with pytest.raises(DownloadFailed) as caught:
        client(server, max_retries=1).download("/f", tmp_path, max_bytes=5000)
    assert not caught.value.permanent


@pytest.mark.parametrize("reply", [
    Reply(body=b"<!DOCTYPE html><html>Log in</html>", headers={"Content-Type": "text/html"}),
    Reply(body=b"<!DOCTYPE html><html>Log in</html>", headers={"Content-Type": "application/pdf"}),
    Reply(body=b'{"error": "not ready"}', headers={"Content-Type": "application/json"}),
    Reply(body=b"%PDF short", headers={"Content-Type": "application/pdf"}),
])
def test_download_that_is_not_the_file_is_refused(server: Server, tmp_path: Path, reply: Reply) -> None:
    server.on("/f", reply)
    with pytest.raises(DownloadFailed) as caught:
        client(server).download("/f", tmp_path, max_bytes=5000, expected_type="application/pdf",
                                expected_size=200)
    assert not caught.value.permanent
    assert list(tmp_path.iterdir()) == []


def test_download_redirect_loop_ends(server: Server, tmp_path: Path) -> None:
    server.on("/loop", Reply(302, b"", {"Location": "/loop"}))
    with pytest.raises(DownloadFailed, match="redirected more than"):
        client(server).download("/loop", tmp_path, max_bytes=5000)


def test_parse_retry_after() -> None:
    assert parse_retry_after("5") == 5
    assert parse_retry_after("-3") == 0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 10, usegmt=True), now=now) == pytest.approx(10, abs=1)


def test_redact_url() -> None:
    assert redact_url("https://user:pw@api.x.com:8443/a/b?token=1#f") == "api.x.com:8443/a/b"


def test_write_once_never_repeats_what_the_server_may_have_applied(server: Server) -> None:
    server.on("/post", Reply(502), Reply(body=b'{"id": 1}'))
    http = client(server, max_retries=4)
    with pytest.raises(TransientError, match="HTTP 502") as info:
        http.write_once("POST", "/post", json={"message": "hi"})
    assert not isinstance(info.value, NotDelivered)  # it may have been posted
    assert http.requests_made == 1 and http.max_retries == 4  # restored for the reads
    server.on("/slow", Reply(delay=1.0))
    slow = client(server, timeout=0.2, max_retries=3)
    with pytest.raises(TransientError, match="timed out"):
        slow.write_once("POST", "/slow", json={})
    assert slow.requests_made == 1
    server.on("/limited", Reply(429, headers={"Retry-After": "0"}), Reply(body=b'{"id": 2}'))
    assert http.write_once("POST", "/limited", json={}) == {"id": 2}  # a 429 applied nothing


def test_write_once_tries_a_refused_connection_again_then_says_nothing_was_sent() -> None:
    pauses: list[float] = []
    http = HttpClient(base_url="http://127.0.0.1:9", max_retries=4, timeout=1,
                      rate_per_second=1000.0, sleep=pauses.append)
    with pytest.raises(NotDelivered, match="connection refused"):
        http.write_once("POST", "/x", json={}, refused_retries=2)
    assert http.requests_made == 3
    assert [p for p in pauses if p >= 0.5] == [0.5, 1.0]  # no backoff of the client's own
