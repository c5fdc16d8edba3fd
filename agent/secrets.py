"""Secret references: ``{ env = "NAME" }``, ``{ command = [...] }`` or ``{ keyring = {...} }``.

Secrets are never written inline in the config file; settings models declare secret
fields with the :data:`Secret` type, which resolves the reference when the config is
validated and keeps the value in a :class:`pydantic.SecretStr` (shown as ``**********``).
"""

from __future__ import annotations

import os
import subprocess
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr

from agent.errors import SecretError

COMMAND_TIMEOUT = 30
_KNOWN: set[str] = set()
_PARTS: list[str] = []  # every secret and its secret parts, longest first


def _token_like(piece: str) -> bool:
    """A URL path segment or query value that looks like a token, not a word."""
    if len(piece) < 6:
        return False
    return (len(piece) >= 16 or any(c.isdigit() for c in piece)
            or (piece.lower() != piece and piece.upper() != piece))


def known_secrets() -> frozenset[str]:
    """Every secret value resolved in this process (for scrubbing logs and errors)."""
    return frozenset(_KNOWN)


def secret_parts(secret: str) -> set[str]:
    """``secret`` and the parts of it that are secret on their own.

    For a URL (a Slack-style webhook, a URL with a token in its query) that is its path
    and query, with and without the host, in plain and %-decoded form, and each path
    segment or query value long enough to be a token: tools print URLs without the
    scheme (``host/path``) or only the path (``url: /services/T0/B0/XYZ``).
    """
    from urllib.parse import unquote, urlsplit

    parts = {secret}
    if "://" not in secret:
        return parts
    try:
        url = urlsplit(secret)
    except ValueError:
        return parts
    tail = url.path + (f"?{url.query}" if url.query else "")
    if url.path.strip("/") or url.query:
        parts.update({tail, url.netloc + tail, url.path + ("?" if url.query else "")})
        if url.path.strip("/"):
            parts.add(url.path.rstrip("/"))
        for piece in url.path.split("/") + [q.partition("=")[2] for q in url.query.split("&")]:
            if _token_like(piece):
                parts.add(piece)
        if url.query:
            parts.add(url.query)
    parts.update({unquote(p) for p in list(parts)})
    return {p for p in parts if len(p) >= 4 and p not in ("/", "?")}


def _remember(secret: str) -> None:
    if secret in _KNOWN:
        return
    _KNOWN.add(secret)
    _PARTS[:] = sorted(set(_PARTS) | secret_parts(secret), key=len, reverse=True)


def scrub(text: str) -> str:
    """Replace every known secret value, and every secret part of one, with ``***``."""
    for part in _PARTS:
        if part in text:
            text = text.replace(part, "***")
    return text


def resolve_secret(ref: Any) -> str:
    """Resolve one secret reference to its value, or raise :class:`SecretError`."""
    if isinstance(ref, SecretStr):
        return ref.get_secret_value()
    if isinstance(ref, str):
        raise SecretError(
            "secrets are never written inline; use { env = \"NAME\" }, "
            "{ command = [\"pass\", \"show\", \"x\"] } or { keyring = { service = \"...\", "
            "username = \"...\" } }"
        )
    if not isinstance(ref, dict) or len(ref) != 1:
        raise SecretError("a secret must be a table with one key: env, command or keyring")
    (kind, value), = ref.items()
    if kind == "env":
        if not isinstance(value, str) or not value:
            raise SecretError("{ env = ... } takes the name of an environment variable")
        secret = os.environ.get(value)
        if secret is None:
            raise SecretError(f"environment variable {value} is not set; export it first")
        return secret
    if kind == "command":
        if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise SecretError('{ command = [...] } takes a list of strings, e.g. ["pass", "x"]')
        try:
            done = subprocess.run(value, capture_output=True, timeout=COMMAND_TIMEOUT,
                                  check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SecretError(f"secret command {value[0]!r} could not run: "
                              f"{type(exc).__name__}") from None
        if done.returncode != 0:
            raise SecretError(f"secret command {value[0]!r} exited with {done.returncode}; "
                              "run it by hand to see why")
        out = done.stdout.decode("utf-8", "replace")
        return out.splitlines()[0] if out else ""
    if kind == "keyring":
        if not (isinstance(value, dict) and {"service", "username"} <= set(value)):
            raise SecretError("{ keyring = { service = ..., username = ... } } needs both keys")
        try:
            import keyring
            import keyring.errors
        except ImportError:
            raise SecretError("keyring secrets need the keyring package: "
                              "pip install 'retainer[keyring]'") from None
        try:
            secret = keyring.get_password(value["service"], value["username"])
        except keyring.errors.KeyringError as exc:
            raise SecretError(f"the system keyring is not available ({type(exc).__name__}); "
                              "use { env = ... } or { command = [...] } instead") from None
        if secret is None:
            raise SecretError(f"no keyring entry for service {value['service']!r}")
        return str(secret)
    raise SecretError(f"unknown secret kind {kind!r}: use env, command or keyring")


def _validate(ref: Any) -> SecretStr:
    try:
        value = resolve_secret(ref)
    except SecretError as exc:
        raise ValueError(str(exc)) from None
    if len(value) >= 4:
        _remember(value)
    return SecretStr(value)


Secret = Annotated[SecretStr, BeforeValidator(_validate)]
"""A settings field type for passwords and tokens: a resolved reference, redacted."""
