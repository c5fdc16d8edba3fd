"""`retainer init` and `retainer config`: write a starter config, check one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent.cli.app import App
from agent.cli.output import emit_json
from agent.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel


@click.command()
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.pass_obj
def init(app: App, force: bool) -> None:
    """Write a commented starter config."""
    from agent.cli.starter import STARTER_CONFIG
    from agent.files import ensure_private_dir, write_private

    path = app.config_path
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; pass --config with a file name, e.g. "
                          f"{path / 'config.toml'}")
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; edit it, or pass --force to overwrite it")
    if not path.parent.exists():  # only what is missing is created (0700); an existing
        ensure_private_dir(path.parent)  # folder keeps its mode (it may be /tmp or ~)
    elif not path.parent.is_dir():
        raise ConfigError(f"{path.parent} is not a folder; pass --config with another path")
    try:
        write_private(path, STARTER_CONFIG.encode())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the config file: {exc.strerror}") from None
    click.echo(f"wrote {path}; edit it, then run `retainer config check`")


@click.group("config")
def config_group() -> None:
    """Inspect the config file."""


@config_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def config_check(app: App, as_json: bool) -> None:
    """Validate the config and every source's settings (secrets redacted)."""
    try:
        config = app.config()
        problems = [f'{config.path}: sources[{index}] ("{source.name}"): settings.{problem}'
                    for index, source in enumerate(config.sources)
                    if source.name in config.settings
                    for problem in missing_paths(config.settings[source.name])]
        if problems:
            raise ConfigError("\n".join(problems))
    except ConfigError as exc:
        if as_json:
            emit_json({"ok": False, "errors": str(exc).splitlines()})
        else:
            click.echo(str(exc), err=True)
        sys.exit(1)
    sources: list[dict[str, Any]] = []
    for source in config.sources:
        if source.name not in config.settings:
            sources.append({"name": source.name, "platform": source.platform,
                            "every": str(source.every), "enabled": False, "settings": {}})
            continue
        settings = config.settings[source.name]
        sources.append({
            "name": source.name, "platform": source.platform,
            "every": str(source.every), "enabled": source.enabled,
            "settings": json.loads(settings.model_dump_json()),
        })
    if as_json:
        emit_json({"ok": True, "path": str(config.path), "data_dir": str(config.data_dir),
                   "sources": sources})
        return
    click.echo(f"{config.path}: ok, {len(sources)} source(s), data in {config.data_dir}")
    for entry in sources:
        click.echo(f"  {entry['name']} ({entry['platform']}, every {entry['every']})")
        for key, value in entry["settings"].items():
            click.echo(f"    {key} = {json.dumps(value)}")




def missing_paths(settings: BaseModel, prefix: str = "") -> list[str]:
    """Every file or folder a source's settings name (``Path`` values, nested tables
    too) that does not exist, as ``key: problem`` lines."""
    from pydantic import BaseModel

    problems = []
    for name, info in type(settings).model_fields.items():
        value = getattr(settings, name, None)
        key = f"{prefix}{info.alias or name}"
        if isinstance(value, BaseModel):
            problems += missing_paths(value, f"{key}.")
        elif isinstance(value, Path) and not value.exists():
            problems.append(f"{key}: {value} does not exist; create it or fix the path")
    return problems
