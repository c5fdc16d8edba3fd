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
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.connector import Settings
from agent.secrets import Secret
from plugins.imap.smtp import SmtpSettings

Security = Literal["tls", "starttls", "none"]
DEFAULT_PORTS: dict[str, int] = {"tls": 993, "starttls": 143, "none": 143}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ImapSettings(Settings):
    """What one IMAP account needs. ``host``, ``username`` and ``password`` are required."""

    host: str = Field(description="the IMAP server's name, e.g. imap.example.com")
    port: int | None = Field(None, ge=1, le=65535,
                             description="default 993 for tls, 143 for starttls and none")
    security: Security = Field("tls", description='"tls" (implicit TLS), "starttls", or '
                               '"none" (only for a server on this machine)')
    username: str = Field(min_length=1)
    password: Secret = Field(description="{ env = ... }, { command = [...] } or { keyring = {...} }")
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

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.security]
