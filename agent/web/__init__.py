"""The owner's dashboard: a local web app over the store (``retainer serve``).

Flask renders Jinja2 templates (autoescaped) on the server; waitress serves them. Every
action is a plain HTML form, so it all works without JavaScript; ``static/app.js`` only
adds keyboard shortcuts. :mod:`agent.web.security` has the guards (token, CSRF, headers).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config.file import LOOPBACK as LOOPBACK
from agent.config.file import parse_address as parse_address
from agent.errors import ConfigError
from agent.web.context import DEFAULT_PORT as DEFAULT_PORT
from agent.web.context import WebContext as WebContext

if TYPE_CHECKING:
    from flask import Flask
    from waitress.server import BaseWSGIServer

    from agent.plugins import PluginHost

log = logging.getLogger("retainer.web")


def web_address(config_path: Path) -> tuple[str, int] | None:
    """``[agent] web`` of a config file, read without validating the rest."""
    from agent.config.file import read_toml

    value = (read_toml(config_path).get("agent") or {}).get("web")
    return parse_address(value) if value else None


def dashboard_url(host: str, port: int, token: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={token}"


def create_app(ctx: WebContext) -> Flask:
    from agent.web.app import build

    return build(ctx)


class Server:
    """The dashboard on a waitress server; :meth:`start` runs it in a background thread."""

    def __init__(self, ctx: WebContext, *, threads: int = 4) -> None:
        from waitress import create_server

        self.ctx = ctx
        self.app = create_app(ctx)
        try:
            self.server: BaseWSGIServer = create_server(
                self.app, host=ctx.bind, port=ctx.port, threads=threads, ident="retainer",
                clear_untrusted_proxy_headers=True)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {ctx.bind}:{ctx.port}: {exc.strerror}; "
                              "pick another port with --port") from None
        ctx.port = int(self.server.effective_port)  # type: ignore[attr-defined]
        self.thread: threading.Thread | None = None
        self.closing = False

    @property
    def url(self) -> str:
        return dashboard_url(self.ctx.bind, self.ctx.port, self.ctx.token)

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until :meth:`close` (or Ctrl-C); ``ready`` is called once Ctrl-C is
        sure to stop it (where the command prints the URL)."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            # Ctrl-C (SIGINT) stops the server even when it was started with SIGINT ignored,
            # as a shell does for a background job: like `retainer run` and `retainer sync`
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            if ready is not None:
                ready()
            self.server.run()
        except (KeyboardInterrupt, SystemExit):
            pass
        except (OSError, ValueError):
            if not self.closing:  # closing from another thread pulls the socket away
                raise
        finally:
            self.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def start(self) -> Server:
        self.thread = threading.Thread(target=self.run, name="retainer-web", daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        self.closing = True
        try:
            self.server.close()
        except OSError:
            pass


def make_server(config_path: Path, data_dir: Path, host_factory: Callable[[], PluginHost], *,
                bind: str = LOOPBACK, port: int = DEFAULT_PORT) -> Server:
    """The dashboard for a data folder, its token created (0600) on first use."""
    from agent.web.security import load_or_create_token

    token = load_or_create_token(data_dir)
    return Server(WebContext(config_path=config_path, data_dir=data_dir, token=token,
                             host_factory=host_factory, port=port, bind=bind))


def demo_server(config_path: Path, data_dir: Path, host_factory: Callable[[], PluginHost],
                port: int | None) -> Server:
    """``retainer demo --serve``: port 8765, or any free port when that one is taken."""
    if port is not None:
        return make_server(config_path, data_dir, host_factory, port=port)
    try:
        return make_server(config_path, data_dir, host_factory, port=DEFAULT_PORT)
    except ConfigError:
        return make_server(config_path, data_dir, host_factory, port=0)


__all__ = ["DEFAULT_PORT", "Server", "WebContext", "create_app", "dashboard_url", "demo_server",
           "make_server", "parse_address", "web_address"]
