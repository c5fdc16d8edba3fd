"""Every hook Retainer calls. Each docstring is that hook's reference documentation.

A plugin is a module (or object) with functions marked ``@agent.hookimpl`` whose names
match the specs below; it may accept any subset of a hook's arguments. Plugins are
found through the ``retainer`` entry-point group, builtin ones included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from agent.connector import Platform
    from agent.mailformats import MailFormat
    from agent.notify import Notifier
    from agent.syncresult import StoredBatch, SyncResult

hookspec = pluggy.HookspecMarker("retainer")


@hookspec
def register_platforms(register: Callable[[Platform], None]) -> None:
    """Register the platforms this plugin can sync from.

    :param register: call it once per :class:`agent.Platform`; the host checks the
        descriptor at once and rejects a platform name another plugin already took,
        naming both plugins.

    Called once when the plugin manager starts. Example::

        @agent.hookimpl
        def register_platforms(register):
            register(agent.Platform("shared-folder", FolderConnector, FolderSettings))
    """


@hookspec
def register_mail_formats(register: Callable[[MailFormat], None]) -> None:
    """Teach the mail platforms to read a marketplace's notification emails.

    :param register: call it once per :class:`agent.mailformats.MailFormat`.

    Called once when the plugin manager starts. Incoming mail that a format matches is
    replaced by what its ``interpret`` returns, so a Fiverr notification becomes a
    message from the Fiverr user, never a contractor called "Fiverr".
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``retainer`` command line.

    :param cli: the top-level :class:`click.Group`; call ``cli.add_command(...)``.

    Called once when the command line is built, before arguments are parsed.
    """


@hookspec
def records_stored(batch: StoredBatch) -> None:
    """React to records the store has just committed (notifiers, classifiers, exporters).

    :param batch: an :class:`agent.syncresult.StoredBatch` with the source name and the new or
        changed messages and deliverables, as the same JSON documents the CLI prints.

    Called after every committed page, inside the sync. Each implementation runs in its
    own guard: an exception is logged and never fails the sync. Keep it quick.
    """


@hookspec
def source_synced(result: SyncResult) -> None:
    """Learn how one source's sync ended, successfully or not.

    :param result: an :class:`agent.syncresult.SyncResult` (source, counts, error, timings).

    Called once per source after each sync, from ``retainer sync`` and the daemon.
    Exceptions are logged and ignored.
    """


@hookspec
def register_notifiers(register: Callable[[str, type[Notifier]], None]) -> None:
    """Add notifier types for the config's ``[[notifiers]]`` tables (reminders).

    :param register: call it as ``register("pager", PagerNotifier)``, with a subclass of
        :class:`agent.notify.Notifier` whose ``settings_model`` (a subclass of
        :class:`agent.notify.NotifierSettings`) validates the table; ``type = "pager"``
        in a ``[[notifiers]]`` table then selects it. The host rejects a name another
        plugin already registered, naming both plugins, as it does for platforms.

    Called once when the plugin manager starts. The builtin ``desktop``, ``email`` and
    ``webhook`` types come through this hook too (the ``notifiers`` plugin). A
    notifier's :meth:`~agent.notify.Notifier.send` gets the due reminders as a list of
    :class:`agent.notify.Event`; an exception there is logged and the reminders stay due.
    Example::

        @agent.hookimpl
        def register_notifiers(register):
            register("pager", PagerNotifier)
    """


def _hook_names() -> list[str]:
    return [name for name, value in globals().items() if getattr(value, "retainer_spec", None)]


HOOK_NAMES: tuple[str, ...] = tuple(_hook_names())
__all__ = ["HOOK_NAMES", "hookspec"]
