"""OAuth 2.0 for Upwork, on the shared :mod:`agent.oauth` module.

``retainer auth SOURCE`` (host-owned) signs an Upwork source in through :func:`signin`:
the authorization-code flow with the redirect address registered on the API key (Upwork
sends the browser there; the owner pastes the address back), PKCE and ``state``.

Upwork rotates refresh tokens: every refresh returns a new refresh token and cuts the
old one's life to 24 hours. :class:`agent.oauth.TokenManager` writes the new pair to disk
(atomically, 0600) *before* the new access token is used for anything.

The token file is ``<data folder>/sources/<source>/upwork-tokens.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import oauth
from agent.oauth import OAuthClient, Provider, Tokens

if TYPE_CHECKING:
    from agent.http import HttpClient
    from plugins.upwork.settings import UpworkSettings

TOKEN_FILE = "upwork-tokens.json"
#: Refresh this long before the access token expires.
REFRESH_EARLY = oauth.REFRESH_EARLY

__all__ = ["TOKEN_FILE", "TokenManager", "TokenStore", "Tokens", "signin", "signin_hint"]


def signin_hint(source: str) -> str:
    return f"Run `retainer auth {source}` to sign in to Upwork again."


def provider(auth_url: str, token_url: str) -> Provider:
    return Provider("upwork", "Upwork", authorize_url=auth_url, token_url=token_url)


class TokenStore(oauth.TokenStore):
    """The Upwork token file of one source (0600, atomic replace)."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir, TOKEN_FILE)


class TokenManager(oauth.TokenManager):
    """The shared token manager, with the Upwork connector's arguments.

    ``http`` is accepted for compatibility; token requests go through authlib.
    """

    def __init__(self, *, source: str, state_dir: Path, client_id: str, client_secret: str,
                 token_url: str, http: HttpClient | None = None,
                 wall_clock: Callable[[], float] = time.time, auth_url: str = "") -> None:
        client = OAuthClient(source=source, provider=provider(auth_url, token_url),
                             client_id=client_id, client_secret=client_secret,
                             token_file=TOKEN_FILE,
                             timeout=http.timeout if http is not None else 30.0)
        super().__init__(client, state_dir, wall_clock=wall_clock)


def signin(settings: UpworkSettings, source: str) -> OAuthClient:
    """How ``retainer auth SOURCE`` signs an Upwork source in."""
    return OAuthClient(
        source=source, provider=provider(settings.auth_url, settings.token_url),
        client_id=settings.client_id, client_secret=settings.client_secret.get_secret_value(),
        redirect_uri=settings.redirect_uri, token_file=TOKEN_FILE, timeout=settings.timeout,
        verify=lambda token: _whoami(settings, token))


def _whoami(settings: Any, access_token: str) -> str:
    """The signed-in user's name, to confirm the sign-in worked ("" if it cannot tell)."""
    from agent.errors import RetainerError
    from agent.http import HttpClient
    from plugins.upwork import queries

    headers = {"Authorization": f"Bearer {access_token}"}
    if settings.tenant_id:
        headers["X-Upwork-API-TenantId"] = settings.tenant_id
    http = HttpClient(base_url=settings.api_url, timeout=settings.timeout,
                      max_retries=settings.max_retries, rate_per_second=settings.rate_per_second)
    try:
        body = http.request("POST", settings.api_url, headers=headers, json={
            "query": queries.VIEWER, "variables": {}, "operationName": "RetainerViewer"})
    except RetainerError:
        return ""
    finally:
        http.close()
    data = body.get("data") if isinstance(body, dict) else None
    user = (data or {}).get("user") if isinstance(data, dict) else None
    return str(user.get("name") or "") if isinstance(user, dict) else ""
