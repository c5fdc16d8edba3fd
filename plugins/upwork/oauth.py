"""OAuth 2.0 for Upwork: the authorization-code set-up, refresh, and token storage.

Upwork rotates refresh tokens: every refresh returns a new refresh token and cuts the
old one's life to 24 hours. Losing the new one locks the owner out until they sign in
again, so :meth:`TokenManager.refresh` writes the new pair to disk (atomically, 0600)
*before* the new access token is used for anything.

The token file is ``<data folder>/sources/<source>/upwork-tokens.json``::

    {"access_token": ..., "refresh_token": ..., "token_type": "Bearer",
     "expires_at": <epoch seconds>, "obtained_at": <epoch seconds>, "client_id": ...}
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from agent.errors import AuthError, SourceError
from agent.files import write_private
from agent.http import HttpClient, HttpStatusError

TOKEN_FILE = "upwork-tokens.json"
PENDING_FILE = "upwork-auth-state.json"
#: Refresh this long before the access token expires.
REFRESH_EARLY = 300.0

log = logging.getLogger("retainer.plugins.upwork")


def signin_hint(source: str) -> str:
    return f"Run `retainer auth upwork {source}` to sign in to Upwork again."


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_at: float
    obtained_at: float
    token_type: str = "Bearer"
    client_id: str = ""

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "token_type": self.token_type,
                "expires_at": self.expires_at,
                "obtained_at": self.obtained_at,
                "client_id": self.client_id,
            },
            indent=1,
        ).encode()

    @classmethod
    def from_response(cls, body: Any, *, now: float, client_id: str) -> Tokens:
        """Tokens from a token-endpoint answer (``expires_in`` may be a string)."""
        if not isinstance(body, dict) or not body.get("access_token") or not body.get("refresh_token"):
            raise SourceError(
                "Upwork's token endpoint answered without an access and refresh token; "
                "check token_url in the source's settings"
            )
        try:
            expires_in = float(body.get("expires_in") or 86400)
        except (TypeError, ValueError):
            expires_in = 86400.0
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=str(body["refresh_token"]),
            token_type=str(body.get("token_type") or "Bearer"),
            expires_at=now + expires_in,
            obtained_at=now,
            client_id=client_id,
        )


class TokenStore:
    """Reads and writes one source's token file (0600, atomic replace)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / TOKEN_FILE

    def load(self) -> Tokens | None:
        try:
            raw = json.loads(self.path.read_bytes())
            return Tokens(
                access_token=str(raw["access_token"]),
                refresh_token=str(raw["refresh_token"]),
                expires_at=float(raw["expires_at"]),
                obtained_at=float(raw.get("obtained_at", 0)),
                token_type=str(raw.get("token_type", "Bearer")),
                client_id=str(raw.get("client_id", "")),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            log.warning("%s is unreadable; a new sign-in is needed", self.path)
            return None

    def save(self, tokens: Tokens) -> None:
        write_private(self.path, tokens.as_json())


class TokenManager:
    """Hands out a valid access token, refreshing (and saving the rotation) as needed.

    :param http: the client for the token endpoint (shares the rate limit).
    :param wall_clock: epoch seconds; injectable for tests.
    """

    def __init__(
        self,
        *,
        source: str,
        state_dir: Path,
        client_id: str,
        client_secret: str,
        token_url: str,
        http: HttpClient,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.store = TokenStore(state_dir)
        self.client_id = client_id
        self._client_secret = client_secret
        self.token_url = token_url
        self.http = http
        self.wall_clock = wall_clock
        self._tokens: Tokens | None = None
        self.refreshes = 0

    def _current(self) -> Tokens:
        if self._tokens is None:
            self._tokens = self.store.load()
        if self._tokens is None:
            raise AuthError(
                f"the Upwork source {self.source!r} is not signed in yet. "
                f"Run `retainer auth upwork {self.source}` first."
            )
        return self._tokens

    def access_token(self) -> str:
        """A valid access token; refreshes first when it expires within 5 minutes."""
        tokens = self._current()
        if tokens.expires_at - REFRESH_EARLY <= self.wall_clock():
            tokens = self.refresh()
        return tokens.access_token

    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token()}"}

    def refresh(self) -> Tokens:
        """Trade the refresh token for a new pair and save it before returning it."""
        old = self._current()
        try:
            body = self.http.request(
                "POST",
                self.token_url,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": old.refresh_token,
                    "client_id": self.client_id,
                    "client_secret": self._client_secret,
                },
            )
        except HttpStatusError as exc:
            if exc.status in (400, 401) and ("invalid_grant" in exc.body or "invalid_client" in exc.body):
                what = "client id or secret" if "invalid_client" in exc.body else "saved sign-in"
                raise AuthError(
                    f"Upwork refused the {what} for source {self.source!r} "
                    f"(the refresh token is expired or revoked). {signin_hint(self.source)}"
                ) from None
            raise
        except AuthError:
            raise AuthError(
                f"Upwork refused the client id or secret for source {self.source!r}: check them "
                f"in the config, then run `retainer auth upwork {self.source}`."
            ) from None
        tokens = Tokens.from_response(body, now=self.wall_clock(), client_id=self.client_id)
        # Saved at once: the old refresh token is now on its way out.
        self.store.save(tokens)
        self._tokens = tokens
        self.refreshes += 1
        log.info("refreshed the Upwork access token for %s", self.source)
        return tokens

    def force_refresh(self) -> None:
        """After a 401: refresh now, whatever the local expiry says."""
        self.refresh()


# -- authorization-code set-up -----------------------------------------------------------


def new_state() -> str:
    return secrets.token_urlsafe(18)


def authorize_url(auth_url: str, *, client_id: str, redirect_uri: str, state: str) -> str:
    query = urlencode(
        {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": state}
    )
    sep = "&" if "?" in auth_url else "?"
    return f"{auth_url}{sep}{query}"


def save_pending_state(state_dir: Path, state: str, *, now: float) -> None:
    write_private(state_dir / PENDING_FILE, json.dumps({"state": state, "at": now}).encode())


def load_pending_state(state_dir: Path) -> str | None:
    try:
        return str(json.loads((state_dir / PENDING_FILE).read_bytes())["state"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def parse_code(answer: str) -> tuple[str, str | None]:
    """The code (and state, if present) from a pasted code or a whole redirect URL."""
    answer = answer.strip()
    if "code=" in answer:
        query = parse_qs(urlsplit(answer).query or answer.split("?", 1)[-1])
        codes = query.get("code")
        if codes:
            states = query.get("state")
            return codes[0], states[0] if states else None
    return answer, None


def exchange_code(
    *,
    http: HttpClient,
    token_url: str,
    code: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    now: float,
) -> Tokens:
    """Trade an authorization code for tokens (``grant_type=authorization_code``)."""
    try:
        body = http.request(
            "POST",
            token_url,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "client_id": client_id,
                "client_secret": client_secret,
                "redirect_uri": redirect_uri,
            },
        )
    except HttpStatusError as exc:
        if exc.status in (400, 401):
            raise AuthError(
                f"Upwork refused the authorization code ({_oauth_error(exc.body)}). Codes are "
                "single-use and expire within minutes: run the command again and paste the new code."
            ) from None
        raise
    return Tokens.from_response(body, now=now, client_id=client_id)


def _oauth_error(body: str) -> str:
    try:
        data = json.loads(body)
        return str(data.get("error_description") or data.get("error") or "no reason given")
    except ValueError:
        return body[:100] or "no reason given"
