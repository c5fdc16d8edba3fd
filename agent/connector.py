"""What a platform plugin provides: a :class:`Platform` descriptor and a :class:`Connector`.

Vocabulary: a *platform* is a kind of source (``imap``, ``upwork``); a *source* is one
configured account on it; a *connector* is the object that talks to that account for
one sync. The host owns the store, the cursor, retries and scheduling; a connector only
turns the remote side into :mod:`agent.models` records.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from agent.errors import UnsupportedOperation
from agent.models import Cursor, Identity, Outgoing, Page


class Settings(BaseModel):
    """Base for a platform's settings model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=BaseModel)


def _never() -> bool:
    return False


def _nobody(identity: Identity) -> bool:
    return False


@dataclass
class SourceContext:
    """What the host hands a connector: who it is, where it may write, and the owner's rules.

    :param source: the source's name from the config.
    :param platform: the platform name.
    :param state_dir: a 0700 folder of this source's own under the data folder, for
        tokens and other plugin state. Write files there with :func:`agent.files.write_private`.
    :param scratch_dir: a folder for downloads in progress (same filesystem as the store).
    :param max_attachment_bytes: attachments larger than this are recorded with
        ``status="too_large"`` and not downloaded.
    :param is_owner: true for the owner's own identities (mail from them is outgoing).
    :param wants_attachments: true when files from this sender should be downloaded
        (the sender is a known contractor); other senders' files are recorded only.
    :param should_stop: true once the daemon was asked to stop: finish the page, return.
    :param log: the logger to use (``retainer.plugins.<platform>``); never log secrets.
    :param warnings: what went wrong in part while the sync went on (e.g. "no access to
        contracts"); append one line each. The host shows them in ``retainer status``.
    """

    source: str
    platform: str
    state_dir: Path
    scratch_dir: Path
    max_attachment_bytes: int = 50 * 1024 * 1024
    is_owner: Callable[[Identity], bool] = _nobody
    wants_attachments: Callable[[Identity], bool] = _nobody
    should_stop: Callable[[], bool] = _never
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("retainer.plugins"))
    options: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Connector(ABC, Generic[S]):
    """Talks to one source for one sync. Subclass it and implement :meth:`fetch`.

    The host creates a connector with the validated settings and a
    :class:`SourceContext`, calls :meth:`fetch` with the last committed cursor
    (``{}`` on the first sync), stores each yielded :class:`~agent.models.Page` and
    commits its cursor, then calls :meth:`close`.

    Raise :class:`~agent.errors.AuthError` when credentials are refused,
    :class:`~agent.errors.TransientError` (or :class:`~agent.errors.RateLimited`) for
    failures worth retrying, and :class:`~agent.errors.SourceError` for the rest.
    """

    #: Longest a single sync may run before the host treats it as hung (seconds).
    deadline: ClassVar[float] = 3600.0

    def __init__(self, settings: S, context: SourceContext) -> None:
        self.settings = settings
        self.context = context

    @abstractmethod
    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        """Yield pages of records newer than ``cursor``; each page carries the next cursor."""

    def send(self, outgoing: Outgoing) -> str:
        """Send a message to a contractor's thread; return its remote id.

        Platforms that cannot send leave this as it is.
        """
        raise UnsupportedOperation(
            f"the {self.context.platform} platform cannot send messages; "
            "reply on the platform itself"
        )

    def close(self) -> None:
        """Release connections. Called once after :meth:`fetch`, also after errors."""


@dataclass(frozen=True)
class Platform:
    """A kind of source a plugin provides, registered through ``register_platforms``.

    :param name: the value of ``platform =`` in a ``[[sources]]`` table; lowercase.
    :param connector: the :class:`Connector` subclass that syncs one source.
    :param settings: the pydantic model that validates ``[sources.settings]``.
    :param description: one line for ``retainer plugins``.
    :param signin: for sources that sign in with OAuth 2.0: given the validated settings
        and the source's name, the :class:`agent.oauth.OAuthClient` that
        ``retainer auth SOURCE`` uses (``None`` when this source needs no sign-in).
    """

    name: str
    connector: type[Connector[Any]]
    settings: type[BaseModel]
    description: str = ""
    signin: Callable[[Any, str], Any] | None = None
