"""The local store: the only package that talks to TinyDB.

Layout under the data folder (folders 0700, files 0600)::

    store/meta.json               schema version, per-source sync state and cursors
    store/roster.json             contractors, identities (contractors and candidates)
    store/deliverables.json       the review queue (the hot table: small documents)
    store/contracts.json          marketplace contracts, offers and orders
    store/threads/<source>.json   threads of one source
    store/messages/<YYYY-MM>.json messages, sharded by month so a page rewrites little
    files/<sha256><.ext>          deliverable files, content-addressed and deduplicated
    sources/<source>/             plugin state (tokens)
    tmp/                          downloads in progress

Every file is replaced atomically; writes from several processes are serialized by a
file lock and caches are reloaded when another process replaced a file.
"""

from agent.store.core import Store

__all__ = ["Store"]
