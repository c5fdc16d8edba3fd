"""The config file without validation: where it is, reading TOML, durations, data folder.

Kept free of pydantic so that commands which only read the store start fast.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple

from agent.durations import parse_duration
from agent.errors import ConfigError

CONFIG_ENV = "RETAINER_CONFIG"
DEFAULT_REVIEW_OVERDUE = timedelta(days=3)
LOOPBACK = "127.0.0.1"


def default_config_path() -> Path:
    """``$RETAINER_CONFIG``, else ``config.toml`` in the platform's user config folder."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    from platformdirs import user_config_path

    return user_config_path("retainer") / "config.toml"


def default_data_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path("retainer")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no config file here; run `retainer init` to write a starter config, "
            f"or pass --config PATH"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
                          "save the file as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a config file; pass --config FILE") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None


class QuickConfig(NamedTuple):
    """The few [agent] values read-only commands need, read without full validation."""

    path: Path
    data_dir: Path
    review_overdue: timedelta


def expand_path(value: Any) -> Path:
    return Path(os.path.expandvars(str(value))).expanduser()


def check_data_dir(value: Any) -> Path:
    """``agent.data_dir`` as a path; ``ValueError`` unless it is a non-empty string naming
    a folder (or nothing yet)."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"must be a folder path in quotes, not {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError('must not be empty; e.g. data_dir = "~/.local/share/retainer"')
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    path = expand_path(value)
    try:
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a folder; choose another data_dir")
    except OSError as exc:
        raise ValueError(f"{path} cannot be checked ({exc.strerror})") from None
    return path


def quick_config(path: Path) -> QuickConfig:
    """``data_dir`` and ``review_overdue`` from ``path``; ``retainer config check`` validates."""
    agent = read_toml(path).get("agent", {})
    if not isinstance(agent, dict):
        raise ConfigError(f"{path}: agent: must be a table ([agent])")
    try:
        data_dir = check_data_dir(agent["data_dir"]) if "data_dir" in agent else default_data_dir()
    except ValueError as exc:
        raise ConfigError(f"{path}: agent.data_dir: {exc}") from None
    try:
        overdue = parse_duration(agent.get("review_overdue", DEFAULT_REVIEW_OVERDUE))
    except ValueError as exc:
        raise ConfigError(f"{path}: agent.review_overdue: {exc}") from None
    return QuickConfig(path, data_dir, overdue)


def sync_needs(path: Path, names: tuple[str, ...]
               ) -> tuple[Path, set[str], set[str], bool] | None:
    """What ``retainer sync [NAMES]`` needs of the plugins, read plainly from ``path``:
    the data folder, the platforms of the sources it syncs (the named ones, else every
    one not disabled), the plugins named by ``[plugins.NAME]`` tables and whether there
    are ``[[notifiers]]``. ``None`` when the file is not plainly shaped (then every plugin
    loads, and validation says what is wrong)."""
    try:
        data = read_toml(path)
        data_dir = quick_config(path).data_dir
    except ConfigError:
        return None
    tables, plugins = data.get("sources", []), data.get("plugins", {})
    if not (isinstance(tables, list) and all(isinstance(t, dict) for t in tables)
            and isinstance(plugins, dict)):
        return None
    chosen = ([t for t in tables if t.get("name") in names] if names
              else [t for t in tables if t.get("enabled", True) is not False])
    platforms = {t.get("platform") for t in chosen}
    if not all(isinstance(p, str) for p in platforms):
        return None
    return data_dir, {str(p) for p in platforms}, {str(n) for n in plugins}, bool(
        data.get("notifiers"))


def parse_address(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8765"`` (or ``":8765"``, ``"8765"``) as ``(host, port)``."""
    text = str(value).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = LOOPBACK, text
    host = host.strip("[]") or LOOPBACK
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f'agent.web: "{value}" is not an address like "127.0.0.1:8765"') from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"agent.web: port {port} is out of range (1 to 65535)")
    return host, port


# -- the whole file, checked without pydantic (read-only commands) ---------------------------

_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TOP = {"agent", "contractors", "sources", "notifiers", "plugins"}
_AGENT = {"data_dir", "owner_emails", "max_attachment_mb", "review_overdue", "log_level",
          "review_since", "web"}
_SOURCE = {"name", "platform", "every", "enabled", "settings"}
_SEED = {"name", "emails", "skills", "status", "rate", "currency", "identities", "notes"}
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class PlainSource(NamedTuple):
    """A ``[[sources]]`` table as :class:`agent.config.SourceConfig` reads it."""

    name: str
    platform: str
    every: timedelta
    enabled: bool


class PlainAgent(NamedTuple):
    """The ``[agent]`` values :class:`PlainConfig` carries."""

    review_since: date | Literal[False] | None
    owner_emails: tuple[str, ...]


class PlainConfig(NamedTuple):
    """What a read-only command (``status``) needs of the whole file: the same values
    :func:`agent.config.load_config` (``validate=False``) gives for a valid file."""

    path: Path
    data_dir: Path
    agent: PlainAgent
    sources: tuple[PlainSource, ...]


def _strs(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def plain_config(path: Path) -> PlainConfig | None:
    """The config read without pydantic (importing and building its models costs a
    fresh process about 0.1 s), or ``None`` when the file holds anything this plain
    reading does not accept exactly as :func:`agent.config.load_config` would: the caller
    then loads it through pydantic, which gives the same values or the same errors.

    Only canonical shapes pass (a bool where a bool is due, a TOML date for
    ``review_since``, known keys only), so a file accepted here is one that pydantic
    accepts with the same values.
    """
    data = read_toml(path)
    if not set(data) <= _TOP:
        return None
    agent = data.get("agent", {})
    if not isinstance(agent, dict) or not set(agent) <= _AGENT:
        return None
    try:
        data_dir = check_data_dir(agent["data_dir"]) if "data_dir" in agent else default_data_dir()
        if "review_overdue" in agent:
            parse_duration(agent["review_overdue"])
    except ValueError:
        return None
    emails = agent.get("owner_emails", [])
    mb = agent.get("max_attachment_mb", 50.0)
    level = agent.get("log_level", "INFO")
    since = agent.get("review_since")
    web = agent.get("web")
    if not (_strs(emails) and _number(mb) and 0 < mb <= 1024 * 1024
            and isinstance(level, str) and level.strip().upper() in _LEVELS
            and (since is None or since is False
                 or (isinstance(since, date) and not isinstance(since, datetime)))
            and (web is None or isinstance(web, str))):
        return None
    if web:  # the dashboard address is checked by agent.web, which imports config: pydantic
        return None
    seeds = data.get("contractors", [])
    if not isinstance(seeds, list) or not all(_plain_seed(s) for s in seeds):
        return None
    notifiers = data.get("notifiers", [])
    plugins = data.get("plugins", {})
    if not (isinstance(notifiers, list) and all(isinstance(n, dict) for n in notifiers)
            and isinstance(plugins, dict) and all(isinstance(p, dict) for p in plugins.values())):
        return None
    tables = data.get("sources", [])
    if not isinstance(tables, list):
        return None
    sources: list[PlainSource] = []
    for table in tables:
        source = _plain_source(table)
        if source is None or any(s.name == source.name for s in sources):
            return None
        sources.append(source)
    return PlainConfig(path, data_dir, PlainAgent(since, tuple(v.strip().lower() for v in emails)),
                       tuple(sources))


def _plain_seed(seed: Any) -> bool:
    if not isinstance(seed, dict) or not set(seed) <= _SEED or not isinstance(seed.get("name"), str):
        return False
    rate = seed.get("rate")
    idents = seed.get("identities", {})
    return (_strs(seed.get("emails", [])) and _strs(seed.get("skills", []))
            and seed.get("status", "trial") in ("trial", "core", "bench", "retired")
            and (rate is None or (_number(rate) and rate >= 0))
            and isinstance(seed.get("currency", "USD"), str)
            and isinstance(seed.get("notes", ""), str)
            and isinstance(idents, dict)
            and all(isinstance(v, str) for v in idents.values()))


def _plain_source(table: Any) -> PlainSource | None:
    if not isinstance(table, dict) or not set(table) <= _SOURCE:
        return None
    name, platform = table.get("name"), table.get("platform")
    enabled = table.get("enabled", True)
    if not (isinstance(name, str) and _SOURCE_NAME.fullmatch(name) and isinstance(platform, str)
            and isinstance(enabled, bool) and isinstance(table.get("settings", {}), dict)):
        return None
    try:
        every = parse_duration(table["every"]) if "every" in table else timedelta(minutes=15)
    except ValueError:
        return None
    return PlainSource(name, platform, every, enabled)
