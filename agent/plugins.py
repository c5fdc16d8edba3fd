"""Finding, loading and calling plugins.

Builtin platforms (``plugins.imap``, ``plugins.maildir``, ...) are declared as entry
points in Retainer's own ``pyproject.toml``, so they load exactly like third-party ones.

Environment switches:

* ``RETAINER_LOAD_PLUGINS``: a comma list of plugin names to load, and no others
  (empty: load none).
* ``RETAINER_DISABLE_PLUGINS``: a comma list of plugin names not to load.

A renamed builtin (:data:`RENAMED`) is still found by its old name in both lists and in
the config's ``[plugins.NAME]`` tables, with a warning that says the new name.

A command that needs only some platforms (``retainer sync``) loads only the plugins that
provide them, plus those implementing the hooks it calls (:class:`Needs`). Which plugin
provides what is learnt when every plugin is loaded and kept in a small manifest (see
:func:`make_plugin_host`): each plugin's platforms and hooks, keyed by its entry point, its
distribution's version and the stamps of its module's files, so an upgraded, edited or
newly installed plugin makes the host load everything once again. A hook called on a
partly loaded host (e.g. ``register_mail_formats`` once a sync stores mail) first loads
every remaining plugin that implements it.

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
from pathlib import Path
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
        self._mail_formats: list[MailFormat] = []
        self._notifiers: dict[str, type[Notifier]] = {}
        self.notifier_owner: dict[str, str] = {}
        #: entry points not loaded (a partly loaded host), with the hooks each implements
        self._pending: dict[str, tuple[metadata.EntryPoint, frozenset[str]]] = {}

    @property
    def mail_formats(self) -> list[MailFormat]:
        self.load_pending("register_mail_formats")
        return self._mail_formats

    @property
    def notifiers(self) -> dict[str, type[Notifier]]:
        self.load_pending("register_notifiers")
        return self._notifiers

    @property
    def partial(self) -> bool:
        """Whether some installed plugins were left unloaded (see :class:`Needs`)."""
        return bool(self._pending)

    # -- loading ---------------------------------------------------------------------

    def load_entrypoints(self, needs: Needs | None = None, manifest: Path | None = None
                         ) -> None:
        """Load every plugin in the ``retainer`` entry-point group, each in its own guard.

        With ``needs`` and a current ``manifest`` file, only the plugins ``needs`` asks for
        (the rest wait in :attr:`_pending`); without a current manifest every plugin is
        loaded and the manifest written for the next time."""
        only = _env_list("RETAINER_LOAD_PLUGINS")
        disabled = set(_env_list("RETAINER_DISABLE_PLUGINS") or ())
        eps = [ep for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name)
               if ep.name not in self.infos and ep.name not in disabled
               and (only is None or ep.name in only)]
        known = _read_manifest(manifest, eps) if needs is not None and manifest else None
        for ep in eps:
            if known is not None and needs is not None and not needs.wants(ep.name,
                                                                          known[ep.name]):
                self._pending[ep.name] = (ep, frozenset(known[ep.name].get("hooks", ())))
                continue
            self._load(ep)
        if needs is not None and not needs.platforms <= set(self.platforms):
            self.load_pending()  # a platform the manifest did not place: look everywhere
        if manifest is not None and known is None:
            _write_manifest(manifest, eps, self.infos)

    def load_pending(self, hook: str | None = None) -> None:
        """Load the plugins left unloaded (those implementing ``hook``, or all)."""
        for name, (ep, hooks) in list(self._pending.items()):
            if hook is None or hook in hooks:
                del self._pending[name]
                self._load(ep)

    def _load(self, ep: metadata.EntryPoint) -> None:
        version = ep.dist.version if ep.dist is not None else ""
        info = PluginInfo(name=ep.name, version=version, module=ep.value)
        try:
            plugin = ep.load()
        except Exception as exc:
            if self.strict:
                raise PluginError(f'plugin "{ep.name}": could not import {ep.value}: '
                                  f"{type(exc).__name__}: {exc}") from exc
            self._failed(info, f"could not import {ep.value}: {type(exc).__name__}: {exc}")
            return
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
                self._notifiers[kind] = cls
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
            self._mail_formats.extend(found)

    def _impls(self, hook: str, plugin: object | None = None) -> list[Any]:
        caller = getattr(self.pm.hook, hook)
        impls = caller.get_hookimpls()
        return [i for i in impls if plugin is None or i.plugin is plugin]

    # -- calling -----------------------------------------------------------------------

    def platform(self, name: str) -> Platform:
        if name not in self.platforms:
            self.load_pending()  # the manifest did not know it: look everywhere
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
        self.load_pending(hook)
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
        self.load_pending()
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


@dataclass(frozen=True)
class Needs:
    """What a command needs of the plugins: the ``platforms`` of the sources it works
    on, the ``hooks`` it calls, and ``plugins`` named in the config (``[plugins.NAME]``).

    A plugin is loaded when it provides one of the platforms, implements one of the
    hooks, is named, or failed or warned before (so its error is reported as always)."""

    platforms: frozenset[str] = frozenset()
    hooks: frozenset[str] = frozenset()
    plugins: frozenset[str] = frozenset()

    def wants(self, name: str, known: dict[str, Any]) -> bool:
        return bool(name in self.plugins or known.get("error") or known.get("warning")
                    or not self.platforms.isdisjoint(known.get("platforms", ()))
                    or not self.plugins.isdisjoint(known.get("platforms", ()))
                    or not self.hooks.isdisjoint(known.get("hooks", ())))


MANIFEST_FORMAT = 1


def _entry_key(ep: metadata.EntryPoint) -> list[Any]:
    """What a plugin's manifest entry is valid for: its entry point, its distribution's
    version and the stamps (size, mtime) of its module's ``.py`` files (a package: the
    files of its folder), found without importing the plugin."""
    from importlib.util import find_spec

    version = ep.dist.version if ep.dist is not None else ""
    files: list[list[Any]] = []
    try:
        spec = find_spec(ep.module)
    except (ImportError, ValueError):
        spec = None
    origin = spec.origin if spec is not None else None
    if origin and os.path.isfile(origin):
        paths = ([os.path.join(os.path.dirname(origin), n)
                  for n in sorted(os.listdir(os.path.dirname(origin))) if n.endswith(".py")]
                 if spec is not None and spec.submodule_search_locations is not None
                 else [origin])
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            files.append([path, st.st_size, st.st_mtime_ns])
    return [ep.name, ep.value, version, files]


def _read_manifest(path: Path, eps: list[metadata.EntryPoint]
                   ) -> dict[str, dict[str, Any]] | None:
    """The manifest's entry for each of ``eps``, or None unless it is current for all."""
    import json

    try:
        saved = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("format") != MANIFEST_FORMAT:
        return None
    plugins = saved.get("plugins")
    if not isinstance(plugins, dict) or set(plugins) != {ep.name for ep in eps}:
        return None
    for ep in eps:
        entry = plugins[ep.name]
        if not isinstance(entry, dict) or entry.get("key") != _entry_key(ep):
            return None
    return plugins


def _write_manifest(path: Path, eps: list[metadata.EntryPoint],
                    infos: dict[str, PluginInfo]) -> None:
    import json

    from agent.files import ensure_private_dir, write_private

    plugins = {}
    for ep in eps:
        info = infos.get(ep.name)
        if info is None:
            return
        plugins[ep.name] = {"key": _entry_key(ep), "platforms": info.platforms,
                            "hooks": info.hooks, "error": info.error, "warning": info.warning}
    try:  # derived: no fsync; a lost or damaged manifest only means one full load
        ensure_private_dir(path.parent)
        write_private(path, json.dumps({"format": MANIFEST_FORMAT, "plugins": plugins}
                                       ).encode(), sync=False, sync_dir=False)
    except OSError as exc:
        log.debug("plugin manifest %s not written: %s", path, exc)


def make_plugin_host(
    *,
    entrypoints: bool = True,
    strict: bool = False,
    extra: Iterable[object] = (),
    needs: Needs | None = None,
    manifest: Path | None = None,
) -> PluginHost:
    """Build a fresh plugin host: entry-point plugins first, then ``extra`` objects.

    With ``needs`` and ``manifest`` (a file the host keeps: which plugin provides what),
    only the plugins ``needs`` asks for are loaded, once the manifest is current."""
    host = PluginHost(strict=strict)
    if entrypoints:
        host.load_entrypoints(needs, manifest)
    for plugin in extra:
        host.add(plugin)
    return host


__all__ = ["GROUP", "RENAMED", "Needs", "PluginHost", "PluginInfo", "current_name", "hookimpl",
           "make_plugin_host", "plugin_name"]

