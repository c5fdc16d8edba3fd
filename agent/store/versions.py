"""Which deliverables are versions of one piece of work (``logo-v2 final.png`` after
``logo.png``), and how a version is labelled."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.store.ids import deliverable_id_for
from agent.store.layout import chain_key

_VERSION_MARK = re.compile(
    r"(?:[\s._-]+(?:v(?:er(?:sion)?)?\s*\d+|rev(?:ision)?\s*\d*|r\d+|final|draft|revised|"
    r"updated|new|copy|\d{1,2})|\s*\(\d+\))$", re.IGNORECASE)


def work_stem(filename: str) -> str:
    """The name of a piece of work without version marks: ``Logo-v2 final.png`` is ``logo``."""
    stem = Path(filename.replace("\\", "/")).stem.lower().strip()
    while True:
        shorter = _VERSION_MARK.sub("", stem).strip(" ._-")
        if shorter == stem or not shorter:
            return stem
        stem = shorter


def version_label(doc: Mapping[str, Any]) -> str:
    """``"v2 of logo"`` for a later version of a piece of work, else ``""``."""
    version = doc.get("version") or 1
    return f"v{version} of {doc.get('work') or doc.get('filename')}" if version > 1 else ""


class Versions:
    """Which deliverables are versions of one piece of work.

    A new deliverable is a later version of an earlier one when its record says so
    (``replaces``), or else when it comes from the same person, in the same thread (or
    contract), with the same file name apart from version marks (:func:`work_stem`).
    The latest version of each such piece of work is found through the deliverable
    shards' summaries (:meth:`agent.store.layout.Catalog.chain`): an index written with
    the shards, so a page does not rewrite a file that grows with every deliverable.
    """

    def __init__(self, find: Callable[[str], Mapping[str, Any] | None],
                 lookup: Callable[[str], Mapping[str, Any] | None]) -> None:
        self.find = find  # the latest stored version of a piece of work, by chain key
        self.lookup = lookup  # a stored deliverable by id
        self.chains: dict[str, dict[str, Any]] = {}
        self.linked: dict[str, dict[str, Any]] = {}  # linked in this commit, by id

    def _chain(self, key: str) -> dict[str, Any] | None:
        if key not in self.chains:
            found = self.find(key)
            if found is None:
                return None
            self.chains[key] = dict(found)
        return self.chains[key]

    def _previous(self, deliverable_id: str) -> dict[str, Any]:
        doc: Mapping[str, Any] = (self.linked.get(deliverable_id) or self.lookup(deliverable_id)
                                  or {})
        version = doc.get("version") or 1
        return {"id": deliverable_id, "version": version,
                "root": doc.get("version_of") or deliverable_id}

    def link(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with ``version``, ``replaces`` and ``version_of`` set (and remembered)."""
        key = chain_key(doc)
        previous: dict[str, Any] | None = None
        if doc.get("replaces_remote_id"):
            previous = self._previous(deliverable_id_for(doc["source"], doc["replaces_remote_id"]))
        elif key is not None:
            chain = self._chain(key)
            if chain is not None and chain["latest"] != doc["id"] and (
                    chain.get("latest_at") or "") <= (doc.get("received_at") or ""):
                previous = {"id": chain["latest"], "version": chain["version"],
                            "root": chain["root"]}
        version = previous["version"] + 1 if previous else 1
        root = previous["root"] if previous else doc["id"]
        doc = dict(doc, version=version, replaces=previous["id"] if previous else None,
                   version_of=root if previous else None)
        self.linked[doc["id"]] = doc
        latest = self._chain(key) if key is not None else None
        if key is not None and (latest is None or (latest.get("latest_at") or "") <= (
                doc.get("received_at") or "")):  # an older file is not the latest version
            self.chains[key] = {"key": key, "latest": doc["id"], "version": version,
                                "root": root, "latest_at": doc.get("received_at") or ""}
        return doc
