"""Retainer: keep your freelancers, their messages and their deliverables in one place.

This module is the public API for plugin authors.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.connector import (
        Connector,
        DemoContext,
        DemoSource,
        LocalFolder,
        LocalPath,
        NoOptions,
        Platform,
        Settings,
        SourceContext,
    )
    from agent.errors import (
        AuthError,
        ConfigError,
        PluginError,
        RateLimited,
        RetainerError,
        SourceError,
        TransientError,
        UnsupportedOperation,
    )
    from agent.models import (
        Attachment,
        Contract,
        Cursor,
        Identity,
        Message,
        Outgoing,
        Page,
        Record,
        Submission,
    )
    from agent.plugins import hookimpl
    from agent.secrets import Secret

__version__ = "0.1.0"

# Names are imported on first use, so `import agent.errors` (and the command line's
# start-up) does not pay for pydantic before it needs it.
_LAZY = {
    **dict.fromkeys(("Connector", "DemoContext", "DemoSource", "LocalFolder", "LocalPath",
                     "NoOptions", "Platform", "Settings", "SourceContext"), "agent.connector"),
    **dict.fromkeys(("AuthError", "ConfigError", "PluginError", "RateLimited", "RetainerError",
                     "SourceError", "TransientError", "UnsupportedOperation"), "agent.errors"),
    **dict.fromkeys(("Attachment", "Contract", "Cursor", "Identity", "Message", "Outgoing",
                     "Page", "Record", "Submission"), "agent.models"),
    "hookimpl": "agent.plugins",
    "Secret": "agent.secrets",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Attachment", "AuthError", "ConfigError", "Connector", "Contract", "Cursor", "DemoContext",
    "DemoSource", "Identity",
    "LocalFolder", "LocalPath", "Message", "NoOptions", "Outgoing", "Page", "Platform", "PluginError",
    "RateLimited", "Record", "RetainerError", "Secret", "Settings", "SourceContext",
    "SourceError", "Submission", "TransientError", "UnsupportedOperation", "hookimpl",
]
