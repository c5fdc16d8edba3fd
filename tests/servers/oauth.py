"""A small OAuth 2.0 authorization server on 127.0.0.1, written for the tests.

It is a real HTTP server with the endpoints a mail provider has, shaped like Google's
and Microsoft's:

* ``GET  /authorize`` (RFC 6749 4.1 + PKCE S256, RFC 7636): the "owner" (:attr:`login_as`)
  is already signed in and allows access at once: 302 to ``redirect_uri?code&state``.
  ``deny = True`` answers ``error=access_denied`` instead.
* ``POST /token``: ``authorization_code`` (checks client, redirect_uri and the PKCE
  verifier), ``refresh_token`` (rotation: every refresh issues a new refresh token and
  the old one stops working at once, unless ``rotate = False``) and the device-code grant.
* ``POST /devicecode`` and ``GET /device?user_code=...`` (RFC 8628): the second is the
  page where the owner types the code; the test's "browser" calls it.
* ``POST /revoke`` (RFC 7009): revokes the whole grant (refresh and access tokens).
* ``POST /introspect`` (RFC 7662, HTTP Basic auth): what Dovecot's oauth2 passdb asks;
  answers ``{"active": true, "username": ...}`` for a live access token.

Time can be moved with :attr:`offset` (seconds added to the clock) to expire tokens.
Fixture: ``oauth_server`` (session); tests set :attr:`login_as` to their mailbox user.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from tests.servers.dovecot import Dovecot, Mailbox, running_dovecot

INTROSPECT_USER = "dovecot"
INTROSPECT_PASSWORD = "introspect-secret"
PUBLIC_CLIENT = "retainer-public"
CONFIDENTIAL_CLIENT = "retainer-confidential"
CLIENT_SECRET = "confidential-secret-42"
SCOPES = "imap smtp offline_access"


@dataclass
class Grant:
    id: int
    client_id: str
    user: str
    scope: str
    revoked: bool = False


@dataclass
class Hit:
    method: str
    path: str
    grant_type: str = ""
    status: int = 0


@dataclass
class OAuthServer:
    host: str = "127.0.0.1"
    port: int = 0
    login_as: str = "owner"
    deny: bool = False
    rotate: bool = True
    access_ttl: float = 3600.0
    offset: float = 0.0
    clients: dict[str, str | None] = field(default_factory=lambda: {
        PUBLIC_CLIENT: None, CONFIDENTIAL_CLIENT: CLIENT_SECRET})
    grants: list[Grant] = field(default_factory=list)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    access: dict[str, tuple[int, float]] = field(default_factory=dict)
    refresh: dict[str, int] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def introspection_url(self) -> str:
        return f"http://{INTROSPECT_USER}:{INTROSPECT_PASSWORD}@{self.host}:{self.port}/introspect"

    def now(self) -> float:
        return time.time() + self.offset

    def settings(self, *, client: str = PUBLIC_CLIENT) -> dict[str, object]:
        """The OAuth part of an IMAP source's ``[sources.settings]`` (provider = custom)."""
        found: dict[str, object] = {
            "auth": "oauth2", "provider": "custom", "client_id": client,
            "authorize_url": f"{self.base_url}/authorize", "token_url": f"{self.base_url}/token",
            "device_url": f"{self.base_url}/devicecode", "scopes": SCOPES.split(),
        }
        return found

    # -- test helpers -----------------------------------------------------------------

    def revoke_user(self, user: str) -> int:
        """The owner removes the app's access in their account settings."""
        with self.lock:
            count = 0
            for grant in self.grants:
                if grant.user == user and not grant.revoked:
                    grant.revoked = True
                    count += 1
            return count

    def expire_access_tokens(self) -> None:
        """Server side only: the tokens' local expiry still says they are valid."""
        with self.lock:
            self.access = {t: (g, self.now() - 1) for t, (g, _) in self.access.items()}

    def live_refresh_tokens(self, user: str) -> set[str]:
        with self.lock:
            by_id = {g.id: g for g in self.grants}
            return {t for t, g in self.refresh.items()
                    if by_id[g].user == user and not by_id[g].revoked}

    def token_hits(self, grant_type: str | None = None) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == "/token"
                    and (grant_type is None or h.grant_type == grant_type)]

    def introspections(self) -> int:
        with self.lock:
            return sum(1 for h in self.hits if h.path == "/introspect")

    # -- the protocol -------------------------------------------------------------------

    def _issue(self, grant: Grant, *, refresh: bool = True) -> dict[str, Any]:
        access = "at-" + secrets.token_urlsafe(24)
        self.access[access] = (grant.id, self.now() + self.access_ttl)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                "expires_in": int(self.access_ttl), "scope": grant.scope}
        if refresh:
            token = "rt-" + secrets.token_urlsafe(24)
            self.refresh[token] = grant.id
            body["refresh_token"] = token
        return body

    def _client_ok(self, form: dict[str, str], headers: Any) -> str | None:
        """The authenticated client id, or None."""
        client_id = form.get("client_id", "")
        secret = form.get("client_secret")
        basic = headers.get("Authorization", "")
        if basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        if client_id not in self.clients:
            return None
        expected = self.clients[client_id]
        if expected is not None and secret != expected:
            return None
        return client_id

    def authorize(self, query: dict[str, str]) -> tuple[int, str]:
        redirect = query.get("redirect_uri", "")
        if query.get("client_id") not in self.clients or not redirect:
            return 400, "unknown client_id or no redirect_uri"
        if not redirect.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:")):
            return 400, "redirect_uri must be a loopback address with a port (RFC 8252)"
        if query.get("response_type") != "code":
            return 400, "response_type must be code"
        sep = "&" if "?" in redirect else "?"
        state = {"state": query["state"]} if "state" in query else {}
        if self.deny:
            return 302, f"{redirect}{sep}{urlencode({'error': 'access_denied', **state})}"
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return 302, f"{redirect}{sep}{urlencode({'error': 'invalid_request', **state})}"
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.codes[code] = {"client_id": query["client_id"], "redirect_uri": redirect,
                                "challenge": query["code_challenge"], "user": self.login_as,
                                "scope": query.get("scope", ""), "expires": self.now() + 600}
        return 302, f"{redirect}{sep}{urlencode({'code': code, **state})}"

    def token(self, form: dict[str, str], headers: Any) -> tuple[int, dict[str, Any]]:
        client_id = self._client_ok(form, headers)
        if client_id is None:
            return 401, {"error": "invalid_client", "error_description": "client authentication failed"}
        grant_type = form.get("grant_type", "")
        with self.lock:
            if grant_type == "authorization_code":
                entry = self.codes.pop(form.get("code", ""), None)
                if entry is None or entry["client_id"] != client_id or entry["expires"] < self.now():
                    return 400, {"error": "invalid_grant", "error_description": "code invalid or used"}
                if entry["redirect_uri"] != form.get("redirect_uri"):
                    return 400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}
                verifier = form.get("code_verifier", "")
                if not verifier or create_s256_code_challenge(verifier) != entry["challenge"]:
                    return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
                grant = Grant(len(self.grants) + 1, client_id, entry["user"], entry["scope"])
                self.grants.append(grant)
                return 200, self._issue(grant)
            if grant_type == "refresh_token":
                token = form.get("refresh_token", "")
                grant_id = self.refresh.get(token)
                grant = self.grants[grant_id - 1] if grant_id else None
                if grant is None or grant.revoked or grant.client_id != client_id:
                    return 400, {"error": "invalid_grant",
                                 "error_description": "refresh token expired or revoked"}
                if self.rotate:
                    del self.refresh[token]
                return 200, self._issue(grant, refresh=self.rotate)
            if grant_type == "urn:ietf:params:oauth:grant-type:device_code":
                device = self.devices.get(form.get("device_code", ""))
                if device is None or device["client_id"] != client_id:
                    return 400, {"error": "invalid_grant"}
                if device["expires"] < self.now():
                    return 400, {"error": "expired_token"}
                if device["user"] is None:
                    return 400, {"error": "authorization_pending"}
                del self.devices[form["device_code"]]
                grant = Grant(len(self.grants) + 1, client_id, device["user"], device["scope"])
                self.grants.append(grant)
                return 200, self._issue(grant)
        return 400, {"error": "unsupported_grant_type"}

    def device_start(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") not in self.clients:
            return 400, {"error": "invalid_client"}
        device_code = secrets.token_urlsafe(16)
        user_code = secrets.token_hex(4).upper()
        with self.lock:
            self.devices[device_code] = {"client_id": form["client_id"], "user_code": user_code,
                                         "scope": form.get("scope", ""), "user": None,
                                         "expires": self.now() + 600}
        return 200, {"device_code": device_code, "user_code": user_code,
                     "verification_uri": f"{self.base_url}/device", "expires_in": 600,
                     "interval": 0.2}

    def device_approve(self, user_code: str) -> bool:
        with self.lock:
            for device in self.devices.values():
                if device["user_code"] == user_code:
                    device["user"] = self.login_as
                    return True
        return False

    def revoke(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        token = form.get("token", "")
        with self.lock:
            grant_id = self.refresh.get(token) or self.access.get(token, (0, 0.0))[0]
            if grant_id:
                self.grants[grant_id - 1].revoked = True
        return 200, {}

    def introspect(self, token: str) -> dict[str, Any]:
        with self.lock:
            grant_id, expires = self.access.get(token, (0, 0.0))
            grant = self.grants[grant_id - 1] if grant_id else None
            if grant is None or grant.revoked or expires <= self.now():
                return {"active": False}
            return {"active": True, "username": grant.user, "client_id": grant.client_id,
                    "scope": grant.scope, "exp": int(expires), "token_type": "Bearer"}


class _Handler(BaseHTTPRequestHandler):
    server_state: OAuthServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, body: Any, *, location: str | None = None) -> None:
        state = self.server_state
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", "application/json" if not isinstance(body, str)
                         else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)
        with state.lock:
            if state.hits:
                state.hits[-1].status = status

    def _record(self, path: str, grant_type: str = "") -> None:
        with self.server_state.lock:
            self.server_state.hits.append(Hit(self.command, path, grant_type))

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        self._record(split.path)
        if split.path == "/authorize":
            status, where = self.server_state.authorize(query)
            if status == 302:
                self._reply(302, "", location=where)
            else:
                self._reply(status, where)
        elif split.path == "/device":
            ok = self.server_state.device_approve(query.get("user_code", ""))
            self._reply(200 if ok else 404, "approved" if ok else "unknown code")
        else:
            self._reply(404, "not found")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        form = {k: v[0] for k, v in parse_qs(raw).items()}
        path = urlsplit(self.path).path
        self._record(path, form.get("grant_type", ""))
        state = self.server_state
        if path == "/token":
            self._reply(*state.token(form, self.headers))
        elif path == "/devicecode":
            self._reply(*state.device_start(form))
        elif path == "/revoke":
            self._reply(*state.revoke(form))
        elif path == "/introspect":
            expected = base64.b64encode(f"{INTROSPECT_USER}:{INTROSPECT_PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {expected}":
                self._reply(401, {"error": "unauthorized"})
                return
            self._reply(200, state.introspect(form.get("token", raw.strip())))
        else:
            self._reply(404, {"error": "not_found"})


def start(server: OAuthServer) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"server_state": server})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    server.port = int(httpd.server_address[1])
    threading.Thread(target=httpd.serve_forever, name="oauth-test-server", daemon=True).start()
    return httpd


@pytest.fixture(scope="session")
def oauth_server() -> Iterator[OAuthServer]:
    server = OAuthServer()
    httpd = start(server)
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def oauth(oauth_server: OAuthServer) -> Iterator[OAuthServer]:
    """The session's OAuth server with its switches reset, its hits cleared and a new owner
    (``login_as``) for this test."""
    oauth_server.deny, oauth_server.rotate = False, True
    oauth_server.access_ttl, oauth_server.offset = 3600.0, 0.0
    with oauth_server.lock:
        oauth_server.hits.clear()
        oauth_server.login_as = f"owner{len(oauth_server.grants)}-{secrets.token_hex(3)}"
    yield oauth_server
    oauth_server.deny, oauth_server.rotate = False, True
    oauth_server.access_ttl, oauth_server.offset = 3600.0, 0.0


@pytest.fixture(scope="session")
def dovecot_oauth(oauth_server: OAuthServer) -> Iterator[Dovecot]:
    """A second private Dovecot with ``auth_mechanisms = ... xoauth2 oauthbearer`` and an
    oauth2 passdb asking :func:`oauth_server`'s introspection endpoint."""
    with running_dovecot(oauth2_introspection=oauth_server.introspection_url) as server:
        yield server


@pytest.fixture
def oauth_mailbox(dovecot_oauth: Dovecot, oauth: OAuthServer) -> Mailbox:
    """A fresh user of the OAuth Dovecot; the OAuth server signs in as this user."""
    mailbox = dovecot_oauth.add_user()
    oauth.login_as = mailbox.user
    return mailbox


class OAuthSmtp:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that takes only ``AUTH XOAUTH2`` (as
    Microsoft 365's does) after STARTTLS, checking bearer tokens against :class:`OAuthServer`."""

    def __init__(self, oauth: OAuthServer, cert: Any, key: Any) -> None:
        self.oauth = oauth
        self.cert, self.key = cert, key
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[tuple[str, bool]] = []
        self.controller: Any = None
        self.port = 0

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
        from aiosmtpd.smtp import AuthResult

        raw = base64.b64decode(args[1]) if len(args) > 1 else await server.challenge_auth("")
        fields = dict(part.split("=", 1) for part in raw.decode().split("\x01") if "=" in part)
        user = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        answer = self.oauth.introspect(token)
        ok = bool(answer.get("active")) and answer.get("username") == user
        self.logins.append((user, ok))
        if ok:
            return AuthResult(success=True, auth_data=user)
        # like Gmail and Outlook: an error challenge, then the client's empty answer
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def __enter__(self) -> OAuthSmtp:
        import socket
        import ssl

        from aiosmtpd.controller import Controller

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert), str(self.key))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                     tls_context=context, require_starttls=True,
                                     auth_require_tls=True, auth_exclude_mechanism=["LOGIN", "PLAIN"])
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()
