"""Finding, loading and calling plugins.

Builtin platforms (``plugins.imap``, ``plugins.maildir``, ...) are declared as entry
points in Retainer's own ``pyproject.toml``, so they load exactly like third-party ones.

Environment switches:

* ``RETAINER_LOAD_PLUGINS``: a comma list of plugin names to load, and no others
  (empty: load none).
* ``RETAINER_DISABLE_PLUGINS``: a comma list of plugin names not to load.

A renamed builtin (:data:`RENAMED`) is still found by its old name in both lists and in
the config's ``[plugins.NAME]`` tables, with a warning that says the new name.

A plugin that fails to import or register is reported and skipped, unless the host is
*strict* (``retainer --strict`` or ``RETAINER_STRICT=1``), which re-raises so plugin
authors see the traceback. A plugin with no ``@hookimpl`` functions loads, but
``retainer plugins`` flags it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import BaseModel

from agent import hookspecs
from agent.connector import Connector, Platform
from agent.errors import PluginError
from agent.mailformats import MailFormat

if TYPE_CHECKING:
    from agent.notify import Notifier

log = logging.getLogger("retainer.plugins")

hookimpl = pluggy.HookimplMarker("retainer")
GROUP = "retainer"


@dataclass
class PluginInfo:
    """What ``retainer plugins`` shows about one plugin."""

    name: str
    version: str = ""
    module: str = ""
    platforms: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    error: str = ""
    warning: str = ""  # loaded, but probably not what its author meant

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "module": self.module,
            "platforms": self.platforms,
            "hooks": self.hooks,
            "error": self.error,
            "warning": self.warning,
        }


NO_HOOKS = "no hook implementations: mark its functions with @agent.hookimpl"


def plugin_name(plugin: object) -> str:
    """The name a plugin object goes by when no entry point names it.

    A module ``retainer_drop_folder`` is ``drop-folder``, the name its entry point has by
    convention, so the contract kit, logs and ``retainer plugins`` agree.
    """
    name = str(getattr(plugin, "__name__", None) or type(plugin).__name__)
    if isinstance(plugin, ModuleType):  # installed? then its entry point names it
        for ep in metadata.entry_points(group=GROUP):
            if ep.value == name:
                return ep.name
    module = name.rsplit(".", 1)[-1]
    if module.startswith("retainer_") and len(module) > len("retainer_"):
        return module.removeprefix("retainer_").replace("_", "-")
    return name


#: Builtin plugins that were renamed: old name -> new name.
RENAMED: dict[str, str] = {"notifications": "marketplace-mail"}


def current_name(name: str, where: str) -> str:
    """``name``, or the new name of a renamed plugin (with a deprecation warning)."""
    new = RENAMED.get(name)
    if new is None:
        return name
    log.warning('%s: the plugin "%s" is now called "%s"; the old name still works for now, '
                'but write "%s"', where, name, new, new)
    return new


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [current_name(part.strip(), name) for part in raw.split(",") if part.strip()]


class PluginHost:
    """The plugin manager plus what the plugins registered.

    Build one with :func:`make_plugin_host`; tests use ``entrypoints=False`` and
    :meth:`add` to register plugins directly.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict
        self.platforms: dict[str, Platform] = {}
        self.platform_owner: dict[str, str] = {}
        self.infos: dict[str, PluginInfo] = {}
        self.mail_formats: list[MailFormat] = []
        self.notifiers: dict[str, type[Notifier]] = {}
        self.notifier_owner: dict[str, str] = {}

    # -- loading ---------------------------------------------------------------------

    def load_entrypoints(self) -> None:
        """Load every plugin in the ``retainer`` entry-point group, each in its own guard."""
        only = _env_list("RETAINER_LOAD_PLUGINS")
        disabled = set(_env_list("RETAINER_DISABLE_PLUGINS") or ())
        for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
            if ep.name in self.infos or ep.name in disabled:
                continue
            if only is not None and ep.name not in only:
                continue
            version = ep.dist.version if ep.dist is not None else ""
            info = PluginInfo(name=ep.name, version=version, module=ep.value)
            try:
                plugin = ep.load()
            except Exception as exc:
                if self.strict:
                    raise PluginError(f'plugin "{ep.name}": could not import {ep.value}: '
                                      f"{type(exc).__name__}: {exc}") from exc
                self._failed(info, f"could not import {ep.value}: {type(exc).__name__}: {exc}")
                continue
            self.add(plugin, name=ep.name, info=info)

    def add(self, plugin: object, *, name: str | None = None, info: PluginInfo | None = None) -> None:
        """Register one plugin object (a module or an instance with hookimpls)."""
        name = name or plugin_name(plugin)
        info = info or PluginInfo(name=name, module=getattr(plugin, "__name__", ""))
        info.name = name
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._failed(info, f"{type(exc).__name__}: {exc}", exc)
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ())
        self.infos[name] = info
        if not info.hooks:
            info.warning = NO_HOOKS
            log.warning('plugin "%s" has %s', name, NO_HOOKS)
        self._collect_platforms(name, plugin, info)
        self._collect_mail_formats(plugin, info)
        self._collect_notifiers(name, plugin, info)

    def _failed(self, info: PluginInfo, message: str, cause: BaseException | None = None) -> None:
        info.error = message
        self.infos[info.name] = info
        if self.strict:
            raise PluginError(f'plugin "{info.name}": {message}') from cause
        log.error(
            'plugin "%s" was skipped: %s (set RETAINER_DISABLE_PLUGINS=%s to silence this)',
            info.name,
            message,
            info.name,
        )

    def _collect_platforms(self, name: str, plugin: object, info: PluginInfo) -> None:
        for impl in self._impls("register_platforms", plugin):
            found: list[Platform] = []

            def register(platform: Platform, found: list[Platform] = found) -> None:
                _check_platform(platform)
                found.append(platform)

            try:
                impl.function(**_kwargs(impl, register=register))
            except Exception as exc:
                self._failed(info, f"register_platforms failed: {type(exc).__name__}: {exc}", exc)
                return
            for platform in found:
                owner = self.platform_owner.get(platform.name)
                if owner is not None:
                    self._failed(
                        info,
                        f'platform "{platform.name}" is already provided by plugin "{owner}"; '
                        f'disable one of "{owner}" and "{name}"',
                    )
                    continue
                self.platforms[platform.name] = platform
                self.platform_owner[platform.name] = name
                info.platforms.append(platform.name)

    def _collect_notifiers(self, name: str, plugin: object, info: PluginInfo) -> None:
        impls = self._impls("register_notifiers", plugin)
        if not impls:
            return
        from agent.notify import Notifier  # only when a plugin has notifiers

        for impl in impls:
            found: list[tuple[str, type[Notifier]]] = []

            def register(kind: str, cls: type[Notifier],
                         found: list[tuple[str, type[Notifier]]] = found) -> None:
                if not isinstance(kind, str) or not kind or kind != kind.strip().lower():
                    raise PluginError(f"notifier name {kind!r} must be lowercase and not empty")
                if not (isinstance(cls, type) and issubclass(cls, Notifier)):
                    raise PluginError(f'notifier "{kind}": register() takes a subclass of '
                                      f"agent.notify.Notifier, not {cls!r}")
                found.append((kind, cls))

            try:
                impl.function(**_kwargs(impl, register=register))
            except Exception as exc:
                self._failed(info, f"register_notifiers failed: {type(exc).__name__}: {exc}", exc)
                return
            for kind, cls in found:
                owner = self.notifier_owner.get(kind)
                if owner is not None:
                    self._failed(
                        info,
                        f'notifier "{kind}" is already provided by plugin "{owner}"; '
                        f'disable one of "{owner}" and "{name}"',
                    )
                    continue
                self.notifiers[kind] = cls
                self.notifier_owner[kind] = name

    def _collect_mail_formats(self, plugin: object, info: PluginInfo) -> None:
        for impl in self._impls("register_mail_formats", plugin):
            found: list[MailFormat] = []

            def register(fmt: MailFormat, found: list[MailFormat] = found) -> None:
                if not isinstance(fmt, MailFormat):
                    raise PluginError(
                        f"register() takes an agent.mailformats.MailFormat, not {type(fmt).__name__}"
                    )
                found.append(fmt)

            try:
                impl.function(**_kwargs(impl, register=register))
            except Exception as exc:
                self._failed(info, f"register_mail_formats failed: {type(exc).__name__}: {exc}",
                             exc)
                return
            self.mail_formats.extend(found)

    def _impls(self, hook: str, plugin: object | None = None) -> list[Any]:
        caller = getattr(self.pm.hook, hook)
        impls = caller.get_hookimpls()
        return [i for i in impls if plugin is None or i.plugin is plugin]

    # -- calling -----------------------------------------------------------------------

    def platform(self, name: str) -> Platform:
        try:
            return self.platforms[name]
        except KeyError:
            known = ", ".join(sorted(self.platforms)) or "none"
            raise PluginError(
                f'no plugin provides platform "{name}" (installed platforms: {known}); '
                "install the plugin that provides it, or check `retainer plugins`"
            ) from None

    def call_each(self, hook: str, **kwargs: Any) -> list[Any]:
        """Call every implementation of ``hook`` in its own guard; failures are logged."""
        results = []
        for impl in reversed(self._impls(hook)):
            try:
                results.append(impl.function(**_kwargs(impl, **kwargs)))
            except Exception as exc:
                if self.strict:
                    raise
                log.error('plugin "%s" failed in %s: %s: %s', impl.plugin_name, hook,
                          type(exc).__name__, exc)
        return results

    def infos_sorted(self) -> list[PluginInfo]:
        return [self.infos[name] for name in sorted(self.infos)]


def _kwargs(impl: Any, **available: Any) -> dict[str, Any]:
    return {name: available[name] for name in impl.argnames if name in available}


def _check_platform(platform: object) -> None:
    if not isinstance(platform, Platform):
        raise PluginError(f"register() takes an agent.Platform, not {type(platform).__name__}")
    if not platform.name or platform.name != platform.name.strip().lower():
        raise PluginError(f'platform name "{platform.name}" must be lowercase and not empty')
    if not (isinstance(platform.connector, type) and issubclass(platform.connector, Connector)):
        raise PluginError(f'platform "{platform.name}": connector must subclass agent.Connector')
    if not (isinstance(platform.settings, type) and issubclass(platform.settings, BaseModel)):
        raise PluginError(f'platform "{platform.name}": settings must be a pydantic model class')
    for hook in ("signin", "demo"):
        if getattr(platform, hook) is not None and not callable(getattr(platform, hook)):
            raise PluginError(f'platform "{platform.name}": {hook} must be callable or None')


def make_plugin_host(
    *,
    entrypoints: bool = True,
    strict: bool = False,
    extra: Iterable[object] = (),
) -> PluginHost:
    """Build a fresh plugin host: entry-point plugins first, then ``extra`` objects."""
    host = PluginHost(strict=strict)
    if entrypoints:
        host.load_entrypoints()
    for plugin in extra:
        host.add(plugin)
    return host


__all__ = ["GROUP", "RENAMED", "PluginHost", "PluginInfo", "current_name", "hookimpl",
           "make_plugin_host", "plugin_name"]

