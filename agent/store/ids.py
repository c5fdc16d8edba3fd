"""The ids of stored documents: short hashes of where a record came from.

The same record from the same source always gets the same id, which is what makes
storing a page twice change nothing.
"""

from __future__ import annotations

try:  # hashlib's own blake2b (``hashlib.blake2b is _blake2.blake2b`` in CPython), without
    # importing hashlib: it loads OpenSSL, a cost every read command paid for ids it never
    # computes
    from _blake2 import blake2b
except ImportError:  # an interpreter without that module: the same function via hashlib
    from hashlib import blake2b


def short_hash(*parts: str) -> str:
    return blake2b("\x00".join(parts).encode("utf-8", "surrogatepass"),
                           digest_size=8).hexdigest()


def message_id_for(source: str, remote_id: str) -> str:
    return "m_" + short_hash(source, remote_id)


def thread_id_for(source: str, thread_remote_id: str) -> str:
    return "t_" + short_hash(source, thread_remote_id)


def deliverable_id_for(source: str, remote_id: str) -> str:
    return "d_" + short_hash(source, remote_id)


def contractor_id_for(seed: str) -> str:
    """A new contractor's id, from the identity key (or ``name:<name>``) they start with."""
    return "c_" + short_hash(seed)[:10]
