"""Settings of a ``platform = "imap"`` source (the ``[sources.settings]`` table).

Example::

    [[sources]]
    name = "inbox"
    platform = "imap"
    [sources.settings]
    host = "imap.example.com"
    security = "tls"                      # tls (993) | starttls (143) | none (loopback only)
    username = "me@example.com"
    password = { env = "RETAINER_IMAP_PASSWORD" }
    folders = ["INBOX", "Sent"]
    # ca_file = "/etc/ssl/my-server.pem"  # for a server with a self-signed certificate

Certificates are always checked. The only way to trust a self-signed server is to name
its certificate (or its private CA) in ``ca_file``.

Gmail and Microsoft 365 sign in with OAuth 2.0 instead of a password (then run
``retainer auth inbox`` once)::

    auth = "oauth2"
    provider = "google"                   # google | microsoft | custom
    client_id = "1234-abc.apps.googleusercontent.com"
    client_secret = { env = "RETAINER_GOOGLE_SECRET" }   # Google needs one; Microsoft not
    # tenant = "common"                   # microsoft: your tenant id or domain
    # custom: authorize_url, token_url, scopes (and device_url if it has one)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.connector import Settings
from agent.oauth import OAuthClient, Provider, google, microsoft
from agent.secrets import Secret
from agent.smtp import is_loopback
from plugins.imap.smtp import SmtpSettings

Security = Literal["tls", "starttls", "none"]
DEFAULT_PORTS: dict[str, int] = {"tls": 993, "starttls": 143, "none": 143}


class ImapSettings(Settings):
    """What one IMAP account needs. ``host``, ``username`` and ``password`` are required."""

    host: str = Field(description="the IMAP server's name, e.g. imap.example.com")
    port: int | None = Field(None, ge=1, le=65535,
                             description="default 993 for tls, 143 for starttls and none")
    security: Security = Field("tls", description='"tls" (implicit TLS), "starttls", or '
                               '"none" (only for a server on this machine)')
    username: str = Field(min_length=1)
    auth: Literal["password", "oauth2"] = Field(
        "password", description='"password", or "oauth2" for Gmail and Microsoft 365 '
        "(then run `retainer auth SOURCE` once)")
    password: Secret | None = Field(None, description="{ env = ... }, { command = [...] } or "
                                    '{ keyring = {...} }; for auth = "password"')
    provider: Literal["google", "microsoft", "custom"] | None = Field(
        None, description='auth = "oauth2": whose sign-in (custom: name the endpoints)')
    client_id: str | None = Field(None, min_length=1, description="the OAuth client's id")
    client_secret: Secret | None = Field(None, description="the OAuth client's secret, where "
                                         "the provider needs one (Google does)")
    tenant: str = Field("common", min_length=1, description="microsoft: the tenant id or "
                        'domain, or "common" / "organizations"')
    authorize_url: str | None = Field(None, description="custom: the authorize endpoint")
    token_url: str | None = Field(None, description="custom: the token endpoint")
    device_url: str | None = Field(None, description="custom: the device-code endpoint, if any")
    scopes: list[str] | None = Field(None, description="custom: the scopes to ask for "
                                     "(google and microsoft have their own)")
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1,
                               description="folders to read, e.g. [\"INBOX\", \"Sent\"]")
    ca_file: Path | None = Field(None, description="PEM certificate(s) to trust instead of "
                                 "the system's CAs, for a self-signed server")
    batch_size: int = Field(200, ge=1, le=2000, description="messages per FETCH and per page")
    timeout: float = Field(60.0, gt=0, le=3600, description="socket timeout in seconds")
    operation_deadline: float = Field(
        300.0, gt=0, le=86400, description="longest one IMAP command may take in total, "
        "answer included (a server trickling bytes never trips the socket timeout)")
    prefetch: bool = Field(True, description="fetch the next batch while the last one is "
                           "being stored (a second thread; the same connection)")
    reader_processes: int = Field(2, ge=0, le=16, description="processes that read (parse) "
                                  "fetched messages while this one fetches and stores a big "
                                  "sync; 0 reads them in this process")
    max_reconnects: int = Field(3, ge=0, le=20, description="reconnects after a dropped "
                                "connection in one sync before giving up until next time")
    smtp: SmtpSettings | None = Field(None, description="[sources.settings.smtp]: where "
                                      "replies (review feedback, instructions) are sent")

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        value = value.strip()
        if not value or any(ch.isspace() for ch in value) or "/" in value:
            raise ValueError("host must be a server name like imap.example.com "
                             "(no scheme, no port)")
        return value

    @field_validator("folders")
    @classmethod
    def _check_folders(cls, value: list[str]) -> list[str]:
        seen: list[str] = []
        for name in value:
            if not name.strip():
                raise ValueError("folder names must not be empty")
            if name not in seen:
                seen.append(name)
        return seen

    @field_validator("ca_file", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        return Path(os.path.expandvars(str(value))).expanduser()

    @field_validator("ca_file")
    @classmethod
    def _check_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"ca_file {value} does not exist; give the path of the "
                             "server's certificate (PEM)")
        return value

    @model_validator(mode="after")
    def _check_security(self) -> ImapSettings:
        if self.security == "none" and not is_loopback(self.host):
            raise ValueError(
                f'security = "none" would send the password to {self.host} unencrypted; '
                'it is only allowed for 127.0.0.1, ::1 or localhost. Use security = "tls" '
                '(port 993) or "starttls" (port 143)')
        return self

    @model_validator(mode="after")
    def _check_auth(self) -> ImapSettings:
        if self.auth == "password":
            if self.password is None:
                raise ValueError('password is required for auth = "password" (or set '
                                 'auth = "oauth2" for Gmail and Microsoft 365)')
            return self
        if self.provider is None or not self.client_id:
            raise ValueError('auth = "oauth2" needs provider ("google", "microsoft" or '
                             '"custom") and client_id (see the README: Gmail and Microsoft 365)')
        if self.provider == "google" and self.client_secret is None:
            raise ValueError('Google needs the OAuth client\'s secret too: client_secret = '
                             '{ env = "..." }')
        if self.provider == "custom":
            missing = [k for k in ("authorize_url", "token_url", "scopes") if not getattr(self, k)]
            if missing:
                raise ValueError(f'provider = "custom" needs {", ".join(missing)}')
            for key in ("authorize_url", "token_url", "device_url"):
                url = getattr(self, key)
                if url and not (url.startswith("https://") or
                                (url.startswith("http://") and _loopback_url(url))):
                    raise ValueError(f"{key} must be an https:// address (http:// only for "
                                     "a server on this machine)")
        return self

    def oauth_provider(self) -> Provider:
        if self.provider == "google":
            return google()
        if self.provider == "microsoft":
            return microsoft(self.tenant)
        return Provider("custom", self.host, authorize_url=str(self.authorize_url),
                        token_url=str(self.token_url), device_url=self.device_url,
                        scopes=tuple(self.scopes or ()))

    def oauth_client(self, source: str) -> OAuthClient | None:
        """How this source signs in (``retainer auth``); ``None`` for a password."""
        if self.auth != "oauth2":
            return None
        return OAuthClient(
            source=source, provider=self.oauth_provider(), client_id=str(self.client_id),
            client_secret=(self.client_secret.get_secret_value()
                           if self.client_secret is not None else None),
            timeout=min(self.timeout, 60.0))

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.security]


def _loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    return is_loopback(urlsplit(url).hostname or "")
