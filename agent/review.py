"""The review queue and feedback: what to look at next, and the reply that goes back."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from agent.errors import StoreError, UnsupportedOperation
from agent.models import Identity, Outgoing
from agent.stats import hours_between
from agent.store import Store
from agent.store.core import iso, version_label

if TYPE_CHECKING:
    from agent.config import Config
    from agent.plugins import PluginHost

log = logging.getLogger("retainer.review")


def queue(store: Store, *, overdue_after: timedelta, now: datetime | None = None,
          include_reviewed: bool = False) -> list[dict[str, Any]]:
    """The review queue, oldest first, each with its age, contractor and overdue flag."""
    now = now or datetime.now(UTC)
    names = {c["id"]: c["name"] for c in store.contractors()}
    limit_hours = overdue_after.total_seconds() / 3600
    out = []
    for doc in store.deliverables(unreviewed=not include_reviewed):
        age_hours = hours_between(doc.get("received_at"), iso(now))
        out.append(dict(
            doc, contractor=names.get(doc.get("contractor_id") or ""),
            task=doc.get("title") or "", age_hours=None if age_hours is None else round(age_hours, 1),
            version_label=version_label(doc),
            overdue=(doc.get("review_status") == "unreviewed" and age_hours is not None
                     and age_hours > limit_hours),
        ))
    return out


def feedback_text(deliverable: Mapping[str, Any], status: str, rating: int | None, feedback: str
                  ) -> str:
    """The reply body: the owner's words, plus a one-line verdict for the file."""
    verdict = "approved" if status == "approved" else "needs changes"
    head = f"Re: {deliverable.get('filename')}: {verdict}"
    if rating is not None:
        head += f" ({rating}/5)"
    body = feedback.strip() or ("Thank you, this is approved." if status == "approved"
                                else "Please see my notes and send a revised version.")
    return f"{body}\n\n-- \n{head}\n"


def outgoing_for(store: Store, deliverable: Mapping[str, Any], text: str
                 ) -> tuple[Outgoing, str]:
    """The reply to the message (or thread) a deliverable came with, threaded properly.

    Returns the :class:`Outgoing` and the source name it must go through.
    """
    source = deliverable["source"]
    msg = store.message(deliverable["message_id"]) if deliverable.get("message_id") else None
    identity = deliverable.get("identity") or ""
    platform, _, address = identity.partition(":")
    if msg is not None and msg.get("direction") == "in":
        sender = msg["sender"]
        to = Identity(sender.get("platform") or platform or "email", sender["address"],
                      name=sender.get("name") or "")
    elif address:
        to = Identity(platform, address)
    else:
        raise StoreError(f"{deliverable['id']} has no known sender to reply to")
    extra: dict[str, Any] = dict(msg["extra"] or {}) if msg is not None else {}
    subject = (msg["subject"] if msg is not None else "") or deliverable.get("title") \
        or deliverable["filename"]
    if not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    message_id = _bracketed(str(extra.get("message_id") or ""))
    refs = extra.get("references") or []
    if isinstance(refs, str):
        refs = refs.split()
    references = tuple(_bracketed(str(r)) for r in refs if r)
    if message_id and message_id not in references:
        references = (*references, message_id)
    details = deliverable.get("extra") or {}
    thread_remote = ((msg["thread_remote_id"] if msg is not None else "")
                     or details.get("thread_remote_id") or "")
    if not thread_remote and deliverable.get("thread_id"):  # the thread the store knows
        thread_remote = next((t["remote_id"] for t in store.threads(source)
                              if t["id"] == deliverable["thread_id"]), "")
    outgoing = Outgoing(to=to, text=text, subject=subject, thread_remote_id=thread_remote,
                        in_reply_to=message_id, references=references,
                        extra={"deliverable_id": deliverable["id"],
                               "remote_id": msg["remote_id"] if msg is not None else "",
                               "project_id": details.get("project_id")})
    return outgoing, source


def _bracketed(message_id: str) -> str:
    """A Message-ID as mail headers carry it: ``<id@host>``."""
    value = message_id.strip()
    if not value:
        return ""
    return value if value.startswith("<") else f"<{value.strip('<>')}>"


def render_outgoing(outgoing: Outgoing, source: str) -> str:
    """What is about to be sent, for the owner to confirm."""
    lines = [f"Via:      {source}", f"To:       {outgoing.to.name} <{outgoing.to.address}>"
             if outgoing.to.name else f"To:       {outgoing.to.address}",
             f"Subject:  {outgoing.subject}"]
    if outgoing.in_reply_to:
        lines.append(f"In-Reply-To: {outgoing.in_reply_to}")
    lines += ["", outgoing.text.rstrip()]
    return "\n".join(lines)


def send(config: Config, host: PluginHost, store: Store, source: str, outgoing: Outgoing
         ) -> str:
    """Send through the source's plugin (``Connector.send``); return the remote id."""
    from agent.sync import SyncEngine

    source_cfg = config.source(source)
    platform = host.platform(source_cfg.platform)
    settings = config.settings.get(source) or platform.settings.model_validate(source_cfg.settings)
    engine = SyncEngine(config, host, store)
    connector = platform.connector(settings, engine.context_for(source_cfg))
    try:
        return connector.send(outgoing)
    except NotImplementedError:
        raise UnsupportedOperation(
            f"the {source_cfg.platform} platform of source {source!r} cannot send messages; "
            "reply from your mail program or the marketplace instead") from None
    finally:
        connector.close()


def open_file(path: str) -> None:
    """Open a deliverable with the system viewer (xdg-open, open, or the Windows shell)."""
    if not path or not os.path.exists(path):
        raise StoreError(f"the file {path or '(none)'} is not in the store; "
                         "it was too large or is a link: see `retainer review list --json`")
    if sys.platform == "darwin":
        cmd = ["open", path]
    elif os.name == "nt":  # pragma: no cover
        os.startfile(path)  # type: ignore[attr-defined]
        return
    else:
        opener = os.environ.get("RETAINER_OPENER") or shutil.which("xdg-open")
        if not opener:
            raise StoreError(f"no xdg-open to open {path}; open it yourself")
        cmd = [opener, path]
    subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
