"""The local store: the only package that talks to TinyDB.

Layout under the data folder (folders 0700, files 0600)::

    store/meta.json                    schema version, per-source sync state and cursors
    store/roster.json                  contractors, identities (contractors, candidates)
    store/contracts.json               marketplace contracts, offers and orders
    store/messages/<YYYY-MM>.json      messages and their threads, one file per month
    store/deliverables/<YYYY-MM>.json  the review queue, one file per month received
    store/workflow.json ...            reviews, instructions, reminders (agent.store.workflow)
    files/<sha256><.ext>               deliverable files, content-addressed, deduplicated
    sources/<source>/                  plugin state (tokens)
    tmp/<source>/                      downloads in progress

Monthly shards keep every write small: a page of new mail rewrites the months it
touches, not the whole store.

Every file is replaced atomically; writes from several processes are serialized by a
file lock and caches are reloaded when another process replaced a file.
"""

from agent.store.core import Store

__all__ = ["Store"]
