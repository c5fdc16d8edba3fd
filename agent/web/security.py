"""The dashboard's guards: the access token, CSRF, the Host check and the response headers.

* A random access token is made once per data folder and kept in ``web/token`` (0600).
  ``retainer serve`` prints the URL with ``?token=...``; the first visit trades it for an
  HttpOnly, SameSite=Strict cookie and redirects to the same URL without it. Every
  request needs the cookie (or the token in the URL, or ``Authorization: Bearer``).
* Every state-changing request (POST) needs a CSRF field derived from the token with HMAC,
  and, when the browser sends ``Origin`` or ``Sec-Fetch-Site``, a same-origin one.
* The ``Host`` header must name the address the server listens on (DNS rebinding).
* Responses carry a strict Content-Security-Policy, ``nosniff`` and ``no-referrer``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from agent.files import ensure_private_dir, write_private

TOKEN_FILE = "token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'")
#: For contractor files: whatever a browser makes of them, nothing runs.
FILE_CSP = "default-src 'none'; sandbox"


def web_dir(data_dir: Path) -> Path:
    return ensure_private_dir(Path(data_dir) / "web")


def load_or_create_token(data_dir: Path) -> str:
    """The access token of this data folder (made on first use, kept 0600)."""
    path = web_dir(data_dir) / TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = ""
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
        write_private(path, token.encode("ascii"))
    return token


def csrf_for(token: str) -> str:
    """The CSRF field value: not the token itself, so a leaked form does not leak access."""
    return hmac.new(token.encode(), b"retainer-csrf", hashlib.sha256).hexdigest()


def same(a: str | None, b: str) -> bool:
    return bool(a) and hmac.compare_digest(str(a).encode(), b.encode())


def cookie_name(port: int) -> str:
    """Cookies ignore ports: one name per port keeps two dashboards apart."""
    return f"retainer_{port}"
