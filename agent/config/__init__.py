"""The configuration, in two halves kept apart so that read commands start fast.

* :mod:`agent.config.file`: the file itself, without validation and without pydantic:
  where it is (``$RETAINER_CONFIG``), reading TOML, durations, the data folder
  (:class:`~agent.config.file.QuickConfig`) for commands that only read the store.
* :mod:`agent.config.models`: the validated config: the pydantic models of every
  section and :func:`~agent.config.models.load_config` with its precise error messages.

The names below are imported from them on first use, so ``import agent.config.file``
does not pay for pydantic.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config.file import CONFIG_ENV, default_config_path
    from agent.config.models import (
        AgentSection,
        Config,
        ContractorSeed,
        SourceConfig,
        load_config,
    )
    from agent.durations import parse_duration

_LAZY = {
    **dict.fromkeys(("CONFIG_ENV", "default_config_path"), "agent.config.file"),
    "parse_duration": "agent.durations",
    **dict.fromkeys(("AgentSection", "Config", "ContractorSeed", "SourceConfig",
                     "load_config"), "agent.config.models"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent.config' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["CONFIG_ENV", "AgentSection", "Config", "ContractorSeed", "SourceConfig",
           "default_config_path", "load_config", "parse_duration"]
