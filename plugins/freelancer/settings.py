"""Settings of a ``platform = "freelancer"`` source (the ``[sources.settings]`` table).

Example::

    [[sources]]
    name = "freelancer"
    platform = "freelancer"
    every = "15m"
    [sources.settings]
    token = { env = "RETAINER_FREELANCER_TOKEN" }   # a personal OAuth access token

Freelancer.com issues personal access tokens to the owner of an app at
https://accounts.freelancer.com/settings/develop (the developer settings: create an app,
then its access token); the token goes in the ``Freelancer-OAuth-V1``
header. ``base_url`` points at the real service by default; tests and ``retainer demo``
point it at the local sandbox.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from agent.connector import Settings
from agent.secrets import Secret

DEFAULT_BASE_URL = "https://www.freelancer.com"
#: where a Freelancer.com user creates an app and its personal access token
TOKEN_PAGE = "https://accounts.freelancer.com/settings/develop"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FreelancerSettings(Settings):
    """What one Freelancer.com source needs. Only ``token`` is required."""

    token: Secret = Field(description="personal OAuth access token: { env = ... }, "
                                      "{ command = [...] } or { keyring = {...} }")
    base_url: str = Field(DEFAULT_BASE_URL, description="API host; the API lives under /api/")
    owner_id: int | None = Field(None, ge=1, description="your Freelancer.com user id; "
                                 "found through /users/0.1/self/ when left out")
    page_size: int = Field(100, ge=1, le=100, description="items per request (limit=)")
    max_pages: int = Field(2000, ge=1, description="most pages of one listing in one sync")
    threads_per_request: int = Field(100, ge=1, le=200,
                                     description="threads[] values in one messages request")
    rate_per_second: float = Field(10.0, gt=0, le=100, description="request rate ceiling")
    timeout: float = Field(30.0, gt=0, le=600, description="seconds per request")
    max_retries: int = Field(4, ge=0, le=10, description="retries of 429, 5xx and timeouts")
    prefetch_pages: int = Field(2, ge=0, le=8, description="pages read ahead while the "
                                "host stores the previous one (0: none)")
    contracts_every_minutes: float = Field(
        30.0, ge=0, description="how often projects, bids and milestones are re-read "
        "(0: every sync); messages are read every sync")

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value.endswith("/api"):
            value = value[: -len("/api")]
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("base_url must look like https://www.freelancer.com")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("base_url must use https (plain http only for 127.0.0.1, "
                             "so the token is never sent in the clear)")
        return value
