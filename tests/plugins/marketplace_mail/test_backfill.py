"""Promotion backfill through a marketplace's notification email: the file attached to
"Jane D. via Upwork" is recorded, not downloaded (the email comes from Upwork's robot
address, Jane is nobody yet); after `contractors add upwork:Jane D.` the next sync reads
that email again from the Maildir, downloads the file and queues it with its own date."""

from __future__ import annotations

import base64
from pathlib import Path

from agent.store import Store
from tests.plugins.marketplace_mail.conftest import SAMPLES
from tests.plugins.marketplace_mail.test_end_to_end import listing, make_config, run

SKETCH = b"%PDF-1.4 first sketch"


def with_attachment(sample: bytes) -> bytes:
    """The Upwork message notification with a file attached (multipart/mixed)."""
    head, _, body = sample.partition(b"\n\n")
    head = head.replace(b'Content-Type: multipart/alternative; boundary="upw-b1"',
                        b'Content-Type: multipart/mixed; boundary="mix-b0"')
    return (head + b"\n\n--mix-b0\nContent-Type: multipart/alternative; boundary=\"upw-b1\"\n\n"
            + body + b"\n--mix-b0\nContent-Type: application/pdf; name=\"sketch.pdf\"\n"
            b"Content-Disposition: attachment; filename=\"sketch.pdf\"\n"
            b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(SKETCH)
            + b"--mix-b0--\n")


def test_promoting_a_marketplace_person_backfills_the_file_of_their_notification(
        tmp_path: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "Mail" / sub).mkdir(parents=True)
    raw = with_attachment((SAMPLES / "upwork-message.eml").read_bytes())
    (tmp_path / "Mail" / "cur" / "1763900000.M1P1.host:2,S").write_bytes(raw)
    config = make_config(tmp_path)
    run(config, "sync")
    (message,) = Store(tmp_path / "data").iter_messages()
    assert message["identity"] == "upwork:jane d." and not message["contractor_id"]
    assert [a["status"] for a in message["attachments"]] == ["not_downloaded"]
    assert listing(config, "deliverables") == []

    run(config, "contractors", "add", "upwork:Jane D.")
    run(config, "sync")
    (doc,) = listing(config, "deliverables")
    assert doc["filename"] == "sketch.pdf" and doc["status"] == "stored"
    assert doc["received_at"].startswith("2026-11-16T11:20:31")  # the email's own date
    assert doc["review_status"] == "unreviewed"  # older than the first sync, still queued
    assert (tmp_path / "data" / doc["path"]).read_bytes() == SKETCH
    store = Store(tmp_path / "data", create=False)
    (again,) = store.iter_messages()
    assert again["identity"] == "upwork:jane d." and again["contractor_id"]
    assert store.backfill_locators("mail") == []
