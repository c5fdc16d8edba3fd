"""The local store: the only package that talks to TinyDB.

Layout under the data folder (folders 0700, files 0600)::

    store/meta.json                    schema version, per-source sync state and cursors
    store/roster.json                  contractors, identities (contractors, candidates)
    store/contracts.json               marketplace contracts, offers and orders
    store/messages/s<NNNNNN>.json      messages and their threads, bounded shards
    store/deliverables/s<NNNNNN>.json  the review queue, bounded shards
    store/index/<folder>/s<NNNNNN>.json  each shard's summary (derived; see layout.py),
                                       deliverables' with their review queue (.queue.json)
    store/index/views/<name>.json      read models for listings (derived; readmodels.py)
    store/reviews/s<NNNNNN>.json       every review event, bounded shards (records.py)
    store/outbox/s<NNNNNN>.json        messages the owner sent, bounded shards
    store/notified/s<NNNNNN>.json      reminders sent, bounded shards
    store/instructions.json            instruction templates and instructions sent
    files/<sha256><.ext>               deliverable files, content-addressed, deduplicated
    sources/<source>/                  plugin state (tokens)
    tmp/<source>/                      downloads in progress

Bounded shards keep every write small whatever the dates: a page of new mail rewrites
the open shard (and any that held re-fetched documents), not a month or the whole store.
Stores with one shard per month (schema 1), or with every review in ``workflow.json``
and every reminder in ``notify.json`` (schema 2), are upgraded when opened (migrate.py).

Modules, one concern each: ``folder`` (files, caches, write lock, schema, sync state),
``roster`` (contractors and candidates), ``reads`` (listings and lookups), ``pages``
(one page of records staged as documents), ``documents`` and ``ids`` (document shapes),
``versions`` (versions of one piece of work), ``blobs`` (kept files), ``core`` (the
write path and :class:`Store`), ``storage`` (atomic TinyDB files), ``layout`` (shards and
their summaries), ``activity`` and ``counts`` (views derived from the shards, cached per
shard file), ``readmodels`` (small derived documents listings read, checked against the
files they come from), ``workflow`` (reviews, templates, outbox), ``memory`` (the
in-memory store for tests). What the read side returns is typed in :mod:`agent.models`
(``MessageRecord``, ``DeliverableRecord``, ...).

Every file is replaced atomically; writes from several processes are serialized by a
file lock and caches are reloaded when another process replaced a file.
"""

from agent.store.core import Store

__all__ = ["Store"]
