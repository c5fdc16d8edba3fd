"""A local stand-in for a contractor portal's JSON API (127.0.0.1, a thread, stdlib only).

Run it by hand for the guide's walkthrough: ``python jsonfeed_server.py TOKEN`` prints
its URL and serves until interrupted.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class FeedServer:
    """Messages in memory, a bearer token, and switches to fail on purpose."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.messages: list[dict[str, Any]] = []
        self.mode = "ok"  # "ok", "auth" (refuse every token), "down" (HTTP 503)
        self.lock = threading.Lock()
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                feed.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api"

    def start(self) -> FeedServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add(self, text: str, *, files: dict[str, bytes] | None = None,
            sender: str = "maria@example.com", name: str = "Maria Lopez") -> int:
        with self.lock:
            ident = len(self.messages) + 1
            self.messages.append({
                "id": ident, "from": sender, "name": name,
                "sent_at": f"2026-01-05T10:{ident % 60:02d}:00+00:00", "text": text,
                "files": [{"name": k, "data": base64.b64encode(v).decode()}
                          for k, v in (files or {}).items()],
            })
            return ident

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urlparse(request.path)
        if self.mode == "down":
            return self.reply(request, 503, {"error": "maintenance"})
        if self.mode == "auth" or request.headers.get("Authorization") != f"Bearer {self.token}":
            return self.reply(request, 401, {"error": "bad token"})
        if url.path != "/api/messages":
            return self.reply(request, 404, {"error": "no such endpoint"})
        query = parse_qs(url.query)
        after = int(query.get("after", ["0"])[0])
        limit = int(query.get("limit", ["50"])[0])
        with self.lock:
            newer = [m for m in self.messages if m["id"] > after]
        return self.reply(request, 200, {"messages": newer[:limit], "more": len(newer) > limit})

    @staticmethod
    def reply(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


if __name__ == "__main__":
    server = FeedServer(sys.argv[1] if len(sys.argv) > 1 else "let-me-in").start()
    server.add("Hello from the portal", files={"draft.txt": b"first draft\n"})
    print(server.url, flush=True)
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.stop()
