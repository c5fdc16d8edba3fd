"""Settings of an ``upwork`` source (the ``[sources.settings]`` table)."""

from __future__ import annotations

from pydantic import Field

from agent.connector import Settings
from agent.secrets import Secret

API_URL = "https://api.upwork.com/graphql"
AUTH_URL = "https://www.upwork.com/ab/account-security/oauth2/authorize"
TOKEN_URL = "https://www.upwork.com/api/v3/oauth2/token"


class UpworkSettings(Settings):
    """One Upwork account (an API key from the Upwork API Center).

    The URLs default to the real Upwork endpoints; point them at
    :mod:`plugins.upwork.sandbox` to try Retainer without an Upwork account.
    """

    client_id: str = Field(min_length=1, description="the API key's client id")
    client_secret: Secret = Field(description="the API key's secret, e.g. { env = \"UPWORK_SECRET\" }")
    redirect_uri: str = Field(
        "https://localhost/retainer/upwork",
        description="the callback URL registered on the API key",
    )
    api_url: str = API_URL
    auth_url: str = AUTH_URL
    token_url: str = TOKEN_URL
    tenant_id: str = Field("", description="organization id (X-Upwork-API-TenantId); empty: default org")
    rate_per_second: float = Field(
        8.0, gt=0, le=9.5,
        description="Upwork allows 10 requests/s per IP; above 9.5, network jitter can put 11 in one second",
    )
    timeout: float = Field(30.0, gt=0, description="seconds per HTTP attempt")
    max_retries: int = Field(4, ge=0, le=10)
    page_size: int = Field(100, ge=1, le=100, description="rooms or stories per request")
    max_pages: int = Field(0, ge=0, description="most roomList pages per sync (0: no limit)")
    contracts: bool = Field(True, description="also fetch contracts, milestones and submissions")
    download_attachments: bool = True
