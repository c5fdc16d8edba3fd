"""The validated config: loading, validation and precise error messages.

Every source's ``[sources.settings]`` table is validated against its platform's own
settings model at start-up, so a typo fails ``retainer config check`` (and the daemon)
before anything runs, with a message naming the file, the source and the key.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.config.file import (
    check_data_dir,
    default_data_dir,
    parse_address,
    parse_duration,
    read_toml,
)
from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.plugins import PluginHost

log = logging.getLogger("retainer.config")



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentSection(_Strict):
    data_dir: Path = Field(default_factory=default_data_dir)
    owner_emails: list[str] = Field(default_factory=list)
    max_attachment_mb: float = Field(default=50.0, gt=0, le=1024 * 1024, allow_inf_nan=False)
    review_overdue: timedelta = timedelta(days=3)
    log_level: str = "INFO"
    #: Work received before this day enters the queue as already handled (first import
    #: of an old mailbox). Unset: the day of the store's first sync; ``false``: none.
    review_since: date | Literal[False] | None = None
    web: str | None = None  # "127.0.0.1:8765": `retainer run` serves the dashboard there

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Path:
        return check_data_dir(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> str:
        levels = ("DEBUG", "INFO", "WARNING", "ERROR")
        if not isinstance(value, str) or value.strip().upper() not in levels:
            raise ValueError(f"must be one of {', '.join(levels)}, not {value!r}")
        return value.strip().upper()

    @field_validator("owner_emails")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value]

    @field_validator("web")
    @classmethod
    def _web(cls, value: str | None) -> str | None:
        if value:
            try:
                parse_address(value)
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("agent.web: ")) from None
        return value

    @field_validator("review_since", mode="before")
    @classmethod
    def _since(cls, value: Any) -> Any:
        if value is True or isinstance(value, datetime):
            raise ValueError("use a day (review_since = 2026-01-01) or false (everything "
                             "enters the queue); leave it out for the day of the first sync")
        return value

    @field_validator("review_overdue", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)


class ContractorSeed(_Strict):
    name: str
    emails: list[str] = Field(default_factory=list)
    skills: list[str] = Field(default_factory=list)
    status: Literal["trial", "core", "bench", "retired"] = "trial"
    rate: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    currency: str = "USD"
    identities: dict[str, str] = Field(default_factory=dict)  # platform -> user id
    notes: str = ""


class SourceConfig(_Strict):
    name: str
    platform: str
    every: timedelta = timedelta(minutes=15)
    enabled: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError("use letters, digits, '-', '_' and '.' only")
        return value


class _File(_Strict):
    agent: AgentSection = Field(default_factory=AgentSection)
    contractors: list[ContractorSeed] = Field(default_factory=list)
    sources: list[SourceConfig] = Field(default_factory=list)
    notifiers: list[dict[str, Any]] = Field(default_factory=list)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)


@dataclass
class Config:
    """A loaded, validated config. ``settings[name]`` is each source's validated model."""

    path: Path
    agent: AgentSection
    contractors: list[ContractorSeed]
    sources: list[SourceConfig]
    notifiers: list[dict[str, Any]] = field(default_factory=list)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, BaseModel] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.agent.data_dir

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f'{self.path}: no source named "{name}" (configured: {known})')


def _location(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            label = f"{parts.pop() if parts else ''}[{item}]"
            if loc[:i] == ("sources",):
                try:
                    label += f' ("{data["sources"][item]["name"]}")'
                except (KeyError, IndexError, TypeError):
                    pass
            parts.append(label)
        else:
            parts.append(str(item))
    return ".".join(parts)


def _errors(path: Path, exc: ValidationError, data: dict[str, Any], prefix: str = "",
            model: type[BaseModel] | None = None) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        where = _location(tuple(err["loc"]), data)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and model is not None:
            message = _unknown_key(str(err["loc"][-1]), _keys_at(model, tuple(err["loc"][:-1])))
        lines.append(f"{path}: {prefix}{where}: {message}")
    return "\n".join(lines)


def _unknown_key(key: str, known: list[str]) -> str:
    """``unknown key `hots`; did you mean `host`?`` (or the keys there are)."""
    import difflib

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key `{key}`; did you mean `{close[0]}`?"
    return f"unknown key `{key}`" + (f" (known keys: {', '.join(known)})" if known else "")


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the model (or the model nested at ``loc`` in it) accepts."""
    import typing

    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: its type was found with the list
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        current = fields[part].annotation
        while typing.get_origin(current) is not None:  # list[X], X | None, Annotated[X, ...]
            inner = [a for a in typing.get_args(current)
                     if isinstance(a, type) and issubclass(a, BaseModel)]
            current = inner[0] if inner else typing.get_args(current)[0]
    fields = getattr(current, "model_fields", {})
    return sorted(info.alias or name for name, info in fields.items())


def load_config(path: Path, host: PluginHost | None = None, *, only: set[str] | None = None
                ) -> Config:
    """Read and validate ``path``; with ``host``, validate every source's settings too.

    ``only`` limits settings validation (and secret resolution) to the named sources.
    """
    data = read_toml(path)
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_errors(path, exc, data, model=_File)) from None
    seen: set[str] = set()
    for index, source in enumerate(parsed.sources):
        if source.name in seen:
            raise ConfigError(f'{path}: sources[{index}] ("{source.name}"): name: '
                              "another source already has this name; names must be unique")
        seen.add(source.name)
    config = Config(path=path, agent=parsed.agent, contractors=parsed.contractors,
                    sources=parsed.sources, notifiers=parsed.notifiers, plugins=parsed.plugins)
    if host is not None:
        problems: list[str] = []
        for index, source in enumerate(config.sources):
            if only is not None and source.name not in only:
                continue
            if only is None and not source.enabled:
                continue  # a disabled source is checked (and its secrets read) only by name
            label = f'sources[{index}] ("{source.name}")'
            if source.platform not in host.platforms:
                known = ", ".join(sorted(host.platforms)) or "none"
                problems.append(f'{path}: {label}: platform: no plugin provides "{source.platform}"'
                                f" (installed: {known}); see `retainer plugins`")
                continue
            model = host.platforms[source.platform].settings
            try:
                config.settings[source.name] = model.model_validate(
                    source.settings, context={"check_paths": True})
            except ValidationError as exc:
                problems.append(_errors(path, exc, {}, prefix=f"{label}: settings.", model=model))
        if only is None:
            problems += _plugin_tables(path, config, host)
        if problems:
            raise ConfigError("\n".join(problems))
    return config


def _plugin_tables(path: Path, config: Config, host: PluginHost) -> list[str]:
    """Problems in ``[[notifiers]]`` and ``[plugins.NAME]`` tables (typos, unknown names)."""
    from agent.plugins import current_name

    problems: list[str] = []
    if config.notifiers:  # else neither agent.notify's models nor a notifier plugin load
        from agent.notify import known_types, notifier_types

        types = notifier_types(host)
    for index, table in enumerate(config.notifiers):
        label = f"notifiers[{index}]"
        kind = table.get("type")
        if kind not in types:
            problems.append(f"{path}: {label}: type: must be one of {known_types(types)}, "
                            f"not {kind!r}")
            continue
        try:
            types[kind].settings_model.model_validate(table)
        except ValidationError as exc:
            problems.append(_errors(path, exc, {}, prefix=f"{label} ({kind}): ",
                                          model=types[kind].settings_model))
    known = set(host.platforms) | set(host.infos)
    for written, table in config.plugins.items():
        name = current_name(written, f"{path}: plugins.{written}")
        if name not in known and host.partial:  # a sync's host: look among every plugin
            host.load_pending()
            known = set(host.platforms) | set(host.infos)
        if name not in known:
            problems.append(f'{path}: plugins.{written}: no installed plugin or platform is called '
                            f'"{name}" (installed: {", ".join(sorted(known)) or "none"}); '
                            "see `retainer plugins`")
            continue
        platform = host.platforms.get(name)
        model = platform.options if platform else None
        if model is None:
            if table:
                log.warning("%s: plugins.%s: %s declares no options model; its keys (%s) are "
                            "not checked", path, name, name, ", ".join(sorted(table)))
            continue
        try:
            model.model_validate(table)
        except ValidationError as exc:
            problems.append(_errors(path, exc, {}, prefix=f"plugins.{name}: ", model=model))
    return problems
