"""Document ids: the same record from the same source gets the same id, in every version.

The ids are written into the shard files and into other documents (a message names its
thread and deliverables, a review names its deliverable). A Retainer that computed them
differently would store every re-fetched record a second time, beside the first, and
lose the link between reviews and their work: the values below are a format, pinned.
"""

from __future__ import annotations

from agent.store.ids import (
    contractor_id_for,
    deliverable_id_for,
    message_id_for,
    short_hash,
    thread_id_for,
)


def test_ids_are_the_ones_earlier_versions_wrote() -> None:
    assert short_hash("inbox", "<a@x>") == "e43fc6f8e0e88b17"
    assert message_id_for("inbox", "<a@x>") == "m_e43fc6f8e0e88b17"
    assert thread_id_for("inbox", "<a@x>") == "t_e43fc6f8e0e88b17"
    assert deliverable_id_for("inbox", "<a@x>") == "d_e43fc6f8e0e88b17"
    assert contractor_id_for("email:maria@example.com") == "c_6a52987bfe"


def test_source_and_remote_id_are_kept_apart() -> None:
    """("in", "box<a@x>") is another record than ("inbox", "<a@x>"), and the same remote
    id in two sources is two records."""
    assert message_id_for("in", "box<a@x>") == "m_d8c7be12474fae5c"
    assert message_id_for("in", "box<a@x>") != message_id_for("inbox", "<a@x>")
    assert message_id_for("other", "<a@x>") != message_id_for("inbox", "<a@x>")


def test_undecodable_text_still_gets_its_stable_id() -> None:
    """A remote id with a lone surrogate (bytes a mail header could not decode) is hashed
    as it is, not refused and not replaced by another character."""
    assert message_id_for("inbox", "\udce9") == "m_0d18665e6ff32a6f"
    assert message_id_for("inbox", "\udce9") != message_id_for("inbox", "\udcea")
