"""What every view of the dashboard gets: where the config and data are, the plugin host.

Its own module, so the views (:mod:`agent.web.app`, :mod:`agent.web.pages`) do not import
the package that starts them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config.file import LOOPBACK

if TYPE_CHECKING:
    from agent.plugins import PluginHost

DEFAULT_PORT = 8765


@dataclass
class WebContext:
    """What the views need: where the config and data are, and the plugin host for sends."""

    config_path: Path
    data_dir: Path
    token: str
    host_factory: Callable[[], PluginHost]
    port: int = DEFAULT_PORT
    bind: str = LOOPBACK
    lock: threading.RLock = field(default_factory=threading.RLock)
    syncing: dict[str, str] = field(default_factory=dict)
    _host: PluginHost | None = None

    @property
    def host(self) -> PluginHost:
        if self._host is None:
            self._host = self.host_factory()
        return self._host
