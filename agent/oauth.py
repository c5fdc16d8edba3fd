"""OAuth 2.0 for every source that signs in (mail at Google or Microsoft, Upwork, ...).

One module, built on authlib, shared by the plugins:

* :class:`OAuthClient` says how one source signs in: its endpoints, client id (and
  secret, where the provider needs one), scopes and redirect address. A platform
  returns one from its :attr:`~agent.connector.Platform.signin` function.
* :func:`sign_in` runs the sign-in behind ``retainer auth SOURCE``: the authorization-code
  flow with PKCE (RFC 7636) and a loopback redirect (RFC 8252), or the device-code flow
  (RFC 8628) where the provider offers it and no browser is at hand.
* :class:`TokenManager` hands a connector a valid access token: it refreshes ahead of
  expiry and saves a rotated refresh token atomically (0600) *before* the new access
  token is used, so a crash never loses the only refresh token that still works.
* :func:`xoauth2` and :func:`oauthbearer` build the SASL initial responses for IMAP and
  SMTP (Google's XOAUTH2 and RFC 7628 OAUTHBEARER).

Token files live in the source's own 0700 folder under the data folder::

    {"access_token": ..., "refresh_token": ..., "token_type": "Bearer",
     "expires_at": <epoch s>, "obtained_at": <epoch s>, "client_id": ..., "scope": ...}

Nothing here prints; the CLI passes ``say``/``ask`` callbacks. Tokens and secrets never
appear in messages or logs.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from agent.errors import AuthError, SourceError, TransientError
from agent.files import write_private

if TYPE_CHECKING:
    from http.server import HTTPServer

    from authlib.integrations.requests_client import OAuth2Session

log = logging.getLogger("retainer.oauth")

#: Access tokens are refreshed this long before they expire.
REFRESH_EARLY = 300.0
#: How long ``retainer auth`` waits for the browser to come back to the loopback address.
LOOPBACK_WAIT = 300.0
PENDING_FILE = "oauth-pending.json"
DEFAULT_TOKEN_FILE = "oauth-tokens.json"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def signin_hint(source: str) -> str:
    return f"run `retainer auth {source}` to sign in again"


# -- who signs in where -------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """An authorization server's endpoints and the scopes a mail source needs there."""

    name: str
    label: str
    authorize_url: str
    token_url: str
    scopes: tuple[str, ...] = ()
    device_url: str | None = None
    revoke_url: str | None = None
    #: extra authorize parameters, e.g. Google's ``access_type=offline``
    authorize_params: tuple[tuple[str, str], ...] = ()
    #: the host name in the loopback redirect (Microsoft registers ``http://localhost``)
    loopback_host: str = "127.0.0.1"


def google() -> Provider:
    return Provider(
        "google", "Google",
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        token_url="https://oauth2.googleapis.com/token",
        revoke_url="https://oauth2.googleapis.com/revoke",
        scopes=("https://mail.google.com/",),
        # a refresh token is only issued with access_type=offline; prompt=consent makes
        # Google issue a new one on every sign-in (not only the first)
        authorize_params=(("access_type", "offline"), ("prompt", "consent")),
    )


def microsoft(tenant: str = "common") -> Provider:
    base = f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
    return Provider(
        "microsoft", "Microsoft",
        authorize_url=f"{base}/authorize",
        token_url=f"{base}/token",
        device_url=f"{base}/devicecode",
        scopes=("https://outlook.office.com/IMAP.AccessAsUser.All",
                "https://outlook.office.com/SMTP.Send", "offline_access"),
        loopback_host="localhost",
    )


@dataclass(frozen=True)
class OAuthClient:
    """How one source signs in.

    :param redirect_uri: a fixed, registered redirect address (the code is then pasted
        back); ``None`` for a loopback redirect on a free port of 127.0.0.1 (RFC 8252).
    :param token_file: the token file's name in the source's folder.
    :param verify: called with a new access token after sign-in; returns who signed in
        (shown to the owner) or ``""``.
    """

    source: str
    provider: Provider
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    redirect_uri: str | None = None
    token_file: str = DEFAULT_TOKEN_FILE
    timeout: float = 30.0
    pkce: bool = True
    verify: Callable[[str], str] | None = field(default=None, compare=False, repr=False)

    def session(self, **kwargs: Any) -> OAuth2Session:
        from authlib.integrations.requests_client import OAuth2Session

        return OAuth2Session(
            client_id=self.client_id, client_secret=self.client_secret,
            token_endpoint_auth_method="client_secret_post" if self.client_secret else "none",
            scope=" ".join(self.provider.scopes) or None,
            code_challenge_method="S256" if self.pkce else None,
            default_timeout=self.timeout, **kwargs)


# -- tokens -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tokens:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float
    obtained_at: float
    token_type: str = "Bearer"
    client_id: str = ""
    scope: str = ""

    def as_json(self) -> bytes:
        return json.dumps({
            "access_token": self.access_token, "refresh_token": self.refresh_token,
            "token_type": self.token_type, "expires_at": self.expires_at,
            "obtained_at": self.obtained_at, "client_id": self.client_id, "scope": self.scope,
        }, indent=1).encode()

    @classmethod
    def from_response(cls, body: Any, *, now: float, client_id: str, label: str = "the provider",
                      previous: Tokens | None = None) -> Tokens:
        """Tokens from a token-endpoint answer (``expires_in`` may be a string).

        A refresh answer without a refresh token keeps the previous one (Google and
        Microsoft rotate only sometimes; Upwork always does).
        """
        if not isinstance(body, Mapping) or not body.get("access_token"):
            raise SourceError(f"{label}'s token endpoint answered without an access token; "
                              "check token_url in the source's settings")
        refresh = body.get("refresh_token") or (previous.refresh_token if previous else "")
        if not refresh:
            raise SourceError(
                f"{label} issued no refresh token, so Retainer could not stay signed in; "
                "check that the scopes include offline access (Microsoft: offline_access; "
                "Google: the sign-in asks for offline access itself)")
        try:
            expires_in = float(body.get("expires_in") or 3600)
        except (TypeError, ValueError):
            expires_in = 3600.0
        return cls(access_token=str(body["access_token"]), refresh_token=str(refresh),
                   token_type=str(body.get("token_type") or "Bearer"),
                   expires_at=now + expires_in, obtained_at=now, client_id=client_id,
                   scope=str(body.get("scope") or (previous.scope if previous else "")))


class TokenStore:
    """One source's token file (0600, replaced atomically)."""

    def __init__(self, state_dir: Path, name: str = DEFAULT_TOKEN_FILE) -> None:
        self.path = state_dir / name

    def load(self) -> Tokens | None:
        try:
            raw = json.loads(self.path.read_bytes())
            return Tokens(
                access_token=str(raw["access_token"]), refresh_token=str(raw["refresh_token"]),
                expires_at=float(raw["expires_at"]), obtained_at=float(raw.get("obtained_at", 0)),
                token_type=str(raw.get("token_type", "Bearer")),
                client_id=str(raw.get("client_id", "")), scope=str(raw.get("scope", "")))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            log.warning("%s is unreadable; a new sign-in is needed", self.path)
            return None

    def save(self, tokens: Tokens) -> None:
        write_private(self.path, tokens.as_json())


def _oauth_error(exc: BaseException) -> tuple[str, str]:
    """(error code, description) of an authlib OAuthError or an HTTP error answer."""
    error = str(getattr(exc, "error", "") or "")
    description = str(getattr(exc, "description", "") or "")
    return error, description


class TokenManager:
    """Hands out a valid access token, refreshing (and saving the rotation) as needed.

    Thread-safe: a connector's prefetch thread and its main thread may both ask.

    :param wall_clock: epoch seconds; injectable for tests.
    :param on_refresh: called after each refresh with the saved tokens (for counting).
    """

    def __init__(self, client: OAuthClient, state_dir: Path, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.source = client.source
        self.store = TokenStore(state_dir, client.token_file)
        self.wall_clock = wall_clock
        self._tokens: Tokens | None = None
        self._lock = threading.RLock()
        self.refreshes = 0

    def _current(self) -> Tokens:
        if self._tokens is None:
            self._tokens = self.store.load()
        if self._tokens is None:
            raise AuthError(f"the source {self.source!r} is not signed in yet; "
                            f"run `retainer auth {self.source}` first")
        return self._tokens

    def access_token(self) -> str:
        """A valid access token; refreshed first when it expires within 5 minutes."""
        with self._lock:
            tokens = self._current()
            if tokens.expires_at - REFRESH_EARLY <= self.wall_clock():
                tokens = self.refresh()
            return tokens.access_token

    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token()}"}

    def refresh(self) -> Tokens:
        """Trade the refresh token for new tokens and save them before returning them."""
        with self._lock:
            old = self._current()
            label = self.client.provider.label
            body = _token_request(self.client, label, what="refresh", grant={
                "grant_type": "refresh_token", "refresh_token": old.refresh_token},
                source=self.source)
            tokens = Tokens.from_response(body, now=self.wall_clock(), client_id=self.client.client_id,
                                          label=label, previous=old)
            # saved at once: after a rotation the old refresh token is on its way out
            self.store.save(tokens)
            self._tokens = tokens
            self.refreshes += 1
            log.info("refreshed the %s access token for %s", label, self.source)
            return tokens

    def force_refresh(self) -> None:
        """After the server refused the access token: refresh now, whatever the expiry says."""
        self.refresh()


def _token_request(client: OAuthClient, label: str, *, what: str, grant: dict[str, str],
                   source: str) -> dict[str, Any]:
    """POST to the token endpoint through authlib; errors become domain errors."""
    import requests
    from authlib.integrations.base_client.errors import OAuthError

    session = client.session()
    try:
        grant = dict(grant)
        kind = grant.pop("grant_type")
        if kind == "refresh_token":
            body = session.refresh_token(client.provider.token_url,
                                         refresh_token=grant.pop("refresh_token"), **grant)
        else:
            body = session.fetch_token(client.provider.token_url, grant_type=kind, **grant)
    except OAuthError as exc:
        error, description = _oauth_error(exc)
        if error == "invalid_client" or error == "unauthorized_client":
            raise AuthError(f"{label} refused the client id or secret of source {source!r} "
                            f"({description or error}); check client_id and client_secret in "
                            f"the config, then run `retainer auth {source}`") from None
        if what == "refresh" and error == "invalid_grant":
            raise AuthError(f"{label} refused the saved sign-in of source {source!r} (it was "
                            f"revoked or has expired); {signin_hint(source)}") from None
        raise AuthError(f"{label} refused the {what} ({description or error or 'no reason given'})"
                        + ("; codes are single-use and expire within minutes: run the command "
                           "again and paste the new code" if what == "authorization code" else
                           f"; {signin_hint(source)}")) from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise TransientError(f"{label}'s token endpoint answered HTTP {status}; "
                             "try again later") from None
    except (requests.RequestException, ValueError) as exc:
        raise TransientError(f"could not reach {label}'s token endpoint "
                             f"({type(exc).__name__}); try again later") from None
    finally:
        session.close()
    return dict(body)


# -- signing in ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """A sign-in that was started: what the redirect must carry back."""

    state: str
    code_verifier: str = field(repr=False)
    redirect_uri: str
    url: str

    def save(self, state_dir: Path, *, now: float) -> None:
        write_private(state_dir / PENDING_FILE, json.dumps({
            "state": self.state, "code_verifier": self.code_verifier,
            "redirect_uri": self.redirect_uri, "url": self.url, "at": now}).encode())

    @classmethod
    def load(cls, state_dir: Path) -> Pending | None:
        try:
            raw = json.loads((state_dir / PENDING_FILE).read_bytes())
            return cls(str(raw["state"]), str(raw["code_verifier"]), str(raw["redirect_uri"]),
                       str(raw.get("url", "")))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None


def begin(client: OAuthClient, redirect_uri: str) -> Pending:
    """The authorize URL with a fresh ``state`` and PKCE code verifier."""
    verifier = secrets.token_urlsafe(48)  # 64 characters, within RFC 7636's 43..128
    state = secrets.token_urlsafe(18)
    session = client.session(redirect_uri=redirect_uri)
    try:
        extra = dict(client.provider.authorize_params)
        url, _ = session.create_authorization_url(
            client.provider.authorize_url, state=state,
            code_verifier=verifier if client.pkce else None, **extra)
    finally:
        session.close()
    return Pending(state=state, code_verifier=verifier, redirect_uri=redirect_uri, url=str(url))


def parse_answer(answer: str) -> tuple[str, str | None, str | None]:
    """(code, state, error) from a pasted code or a whole redirect address."""
    answer = answer.strip()
    if "code=" in answer or "error=" in answer:
        query = parse_qs(urlsplit(answer).query or answer.split("?", 1)[-1])
        errors = query.get("error_description") or query.get("error")
        error = errors[0] if errors else None
        codes = query.get("code")
        states = query.get("state")
        return (codes[0] if codes else ""), (states[0] if states else None), error
    return answer, None, None


def finish(client: OAuthClient, pending: Pending | None, answer: str, *,
           now: float | None = None) -> Tokens:
    """Trade the code in ``answer`` (a code or the redirect address) for tokens."""
    code, state, error = parse_answer(answer)
    source = client.source
    label = client.provider.label
    if error:
        raise AuthError(f"{label} did not grant access ({error}); run `retainer auth {source}` "
                        "again and allow Retainer access")
    if not code:
        raise AuthError(f"that address carries no code; run `retainer auth {source}` again")
    if state is not None and (pending is None or state != pending.state):
        raise AuthError("the state in that address does not match the sign-in Retainer started "
                        f"(an old or forged link); run `retainer auth {source}` again")
    if pending is None:
        raise AuthError(f"no sign-in was started for {source!r}; run `retainer auth {source}`")
    grant = {"grant_type": "authorization_code", "code": code,
             "redirect_uri": pending.redirect_uri}
    if client.pkce:
        grant["code_verifier"] = pending.code_verifier
    body = _token_request(client, label, what="authorization code", grant=grant, source=source)
    return Tokens.from_response(body, now=time.time() if now is None else now,
                                client_id=client.client_id, label=label)


class LoopbackReceiver:
    """Listens on 127.0.0.1 (a free port) for the one redirect the browser brings back."""

    def __init__(self, path: str = "/", host: str = "127.0.0.1") -> None:
        from http.server import BaseHTTPRequestHandler, HTTPServer

        self.answer: str | None = None
        self._got = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                split = urlsplit(self.path)
                if split.path != path or not split.query:
                    self.send_error(404)
                    return
                receiver.answer = f"{receiver.redirect_uri}?{split.query}"
                body = (b"<!doctype html><title>Retainer</title><p>Retainer received the "
                        b"sign-in. You can close this window and go back to the terminal.")
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                receiver._got.set()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server: HTTPServer = HTTPServer(("127.0.0.1", 0), Handler)
        # the listener is on 127.0.0.1 whatever the name: "localhost" reaches it too
        self.redirect_uri = f"http://{host}:{self.server.server_address[1]}{path}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="oauth-loopback",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def wait(self, timeout: float) -> str | None:
        self._got.wait(timeout)
        return self.answer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def open_browser(url: str) -> bool:
    """Ask the system to open ``url``; False when there is no browser to ask."""
    import webbrowser

    try:
        return bool(webbrowser.open(url, new=1))
    except webbrowser.Error:
        return False


def device_sign_in(client: OAuthClient, say: Callable[[str], None], *,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> Tokens:
    """The device-code flow (RFC 8628): show a code, wait for the owner to enter it."""
    import requests

    label = client.provider.label
    device_url = client.provider.device_url
    if not device_url:
        raise SourceError(f"{label} has no device sign-in; run `retainer auth {client.source}` "
                          "on a machine with a browser, or with --no-browser and paste the address")
    form = {"client_id": client.client_id, "scope": " ".join(client.provider.scopes)}
    try:
        answer = requests.post(device_url, data=form, timeout=client.timeout)
        start: dict[str, Any] = answer.json()
    except (requests.RequestException, ValueError) as exc:
        raise TransientError(f"could not reach {label}'s device sign-in ({type(exc).__name__}); "
                             "try again later") from None
    if answer.status_code != 200 or "device_code" not in start:
        reason = start.get("error_description") or start.get("error") or f"HTTP {answer.status_code}"
        raise AuthError(f"{label} refused the device sign-in ({reason}); check client_id and "
                        "that the app registration allows public client flows")
    where = start.get("verification_uri_complete") or start.get("verification_uri") or ""
    say(f"On any device, open {where} and enter the code {start.get('user_code', '')}")
    interval = float(start.get("interval") or 5)
    deadline = clock() + float(start.get("expires_in") or 900)
    grant = {"grant_type": DEVICE_GRANT, "device_code": str(start["device_code"]),
             "client_id": client.client_id}
    while clock() < deadline:
        sleep(interval)
        try:
            polled = requests.post(client.provider.token_url, data=grant, timeout=client.timeout)
            body: dict[str, Any] = polled.json()
        except (requests.RequestException, ValueError):
            continue  # a lost poll is retried at the next interval
        error = body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        if error:
            reason = body.get("error_description") or error
            raise AuthError(f"the device sign-in ended without access ({reason}); "
                            f"run `retainer auth {client.source} --no-browser` again")
        return Tokens.from_response(body, now=time.time(), client_id=client.client_id, label=label)
    raise AuthError(f"the code was not entered in time; run `retainer auth {client.source} "
                    "--no-browser` again")


@dataclass
class SignInResult:
    tokens: Tokens
    path: Path
    who: str


def sign_in(client: OAuthClient, state_dir: Path, *, say: Callable[[str], None],
            ask: Callable[[str], str], no_browser: bool = False, code: str | None = None,
            print_url: bool = False, device: bool | None = None,
            browser: Callable[[str], bool] = open_browser,
            wait: float = LOOPBACK_WAIT) -> SignInResult | None:
    """``retainer auth SOURCE``. Returns ``None`` when only the URL was printed.

    * default: a loopback redirect on 127.0.0.1 (or the client's fixed redirect, whose
      address is then pasted back) and the browser opened on the authorize URL;
    * ``no_browser``: the device-code flow where the provider has one, otherwise the
      URL is printed and the address the browser lands on is pasted back;
    * ``print_url`` then ``code``: the same in two separate runs.
    """
    store = TokenStore(state_dir, client.token_file)
    label = client.provider.label
    tokens: Tokens
    if code is not None:
        tokens = finish(client, Pending.load(state_dir), code)
    elif (no_browser and device is not False and client.provider.device_url) or device:
        tokens = device_sign_in(client, say)
    else:
        receiver = None
        if client.redirect_uri is None and not no_browser and not print_url:
            receiver = LoopbackReceiver(host=client.provider.loopback_host)
            redirect = receiver.redirect_uri
        else:
            redirect = client.redirect_uri or _unused_loopback(client.provider.loopback_host)
        try:
            pending = begin(client, redirect)
            pending.save(state_dir, now=time.time())
            if print_url:
                say(f"Open this address, sign in to {label} and allow Retainer access:\n")
                say(f"  {pending.url}\n")
                say(f"{label} then sends you to {redirect}?code=...&state=...")
                say(f"Finish with: retainer auth {client.source} --code '<that address>'")
                return None
            if receiver is not None:
                opened = browser(pending.url)
                say(("Your browser was opened to sign in to " if opened else
                     "Open this address in a browser on this machine to sign in to ")
                    + f"{label}:\n\n  {pending.url}\n")
                say("Waiting for the browser to come back ...")
                answer = receiver.wait(wait)
                if answer is None:
                    raise AuthError(f"no answer from the browser within {wait:.0f} s; run "
                                    f"`retainer auth {client.source}` again (or add --no-browser "
                                    "and paste the address)")
            else:
                if not no_browser:
                    browser(pending.url)
                say(f"Open this address, sign in to {label} and allow Retainer access:\n")
                say(f"  {pending.url}\n")
                say(f"{label} then sends you to {redirect}?code=... (the page may not load; "
                    "that is fine).")
                answer = ask("Paste the code, or the whole address you landed on")
            tokens = finish(client, pending, answer)
        finally:
            if receiver is not None:
                receiver.close()
    store.save(tokens)
    # the pending sign-in stays until the next one replaces it: a code pasted twice then
    # reaches the server, which refuses it as used (a clearer answer than "not started")
    who = ""
    if client.verify is not None:
        try:
            who = client.verify(tokens.access_token)
        except Exception as exc:  # the sign-in itself worked; the check is a courtesy
            log.debug("could not tell who signed in: %s", type(exc).__name__)
    return SignInResult(tokens=tokens, path=store.path, who=who)


def _unused_loopback(host: str) -> str:
    """A loopback redirect address for a browser elsewhere: nothing listens, the owner
    pastes the address the browser shows (RFC 8252 section 7.3 allows any port)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return f"http://{host}:{port}/"


# -- SASL ---------------------------------------------------------------------------------


def xoauth2(user: str, token: str) -> str:
    """Google's XOAUTH2 initial response (before base64)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def oauthbearer(user: str, token: str, host: str = "", port: int = 0) -> str:
    """RFC 7628 OAUTHBEARER initial client response (before base64)."""
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    extra = (f"host={host}\x01" if host else "") + (f"port={port}\x01" if port else "")
    return f"n,a={authzid},\x01{extra}auth=Bearer {token}\x01\x01"


#: Preferred first: the standard one.
SASL_MECHANISMS: tuple[str, ...] = ("OAUTHBEARER", "XOAUTH2")


def choose_mechanism(offered: Sequence[str], preference: Sequence[str] = SASL_MECHANISMS
                     ) -> str | None:
    """The first of ``preference`` that the server offers (names compared upper-case)."""
    upper = {m.upper() for m in offered}
    return next((m for m in preference if m in upper), None)

