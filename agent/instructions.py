"""Instruction templates: Markdown with ``{{placeholders}}``, versioned in the store.

Placeholders every send fills: ``{{name}}`` (the contractor's name), ``{{first_name}}``,
``{{date}}`` (today, ISO) and ``{{task}}`` (``--task``); any other one comes from
``--set key=value``. A placeholder left without a value is an error that names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from agent.errors import StoreError
from agent.models import Identity, Outgoing

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

STARTER = """# {{task}}

Hi {{first_name}},

What I need:

- ...

Deadline: ...

Please reply to this message with the files attached.
"""


def placeholders(text: str) -> list[str]:
    seen: list[str] = []
    for name in PLACEHOLDER.findall(text):
        if name not in seen:
            seen.append(name)
    return seen


def fill(text: str, values: dict[str, str]) -> str:
    missing = [p for p in placeholders(text) if p not in values]
    if missing:
        flags = " ".join(f"--set {m}=..." for m in missing)
        raise StoreError(f"the template needs values for {', '.join(missing)}; pass {flags}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def values_for(contractor: Mapping[str, Any], task: str, extra: dict[str, str],
               now: datetime | None = None) -> dict[str, str]:
    name = contractor.get("name") or ""
    values = {"name": name, "first_name": name.split()[0] if name else "",
              "date": (now or datetime.now(UTC)).date().isoformat(), "task": task}
    values.update(extra)
    return values


def parse_sets(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise StoreError(f"--set takes key=value, not {pair!r}")
        out[key.strip()] = value
    return out


def route_for(contractor: Mapping[str, Any], recent: Sequence[Mapping[str, Any]]
              ) -> tuple[str, Identity, str]:
    """Where to send: the source, identity and thread of the latest message with them."""
    for msg in recent:
        ident = msg.get("identity") or ""
        platform, _, address = ident.partition(":")
        if msg.get("source") and address:
            return msg["source"], Identity(platform, address, name=contractor.get("name", "")), \
                msg.get("thread_remote_id") or ""
    raise StoreError(f"no message with {contractor.get('name')} is stored yet, so there is no "
                     "thread to send through; sync first, or use --record-only after "
                     "sending it yourself")


def outgoing(to: Identity, subject: str, text: str, thread_remote_id: str = "") -> Outgoing:
    return Outgoing(to=to, text=text, subject=subject, thread_remote_id=thread_remote_id)
