"""The reader pool: messages read in forked worker processes give exactly the records read
in this process, in order; a worker that dies leaves the sync reading here."""

from __future__ import annotations

import logging
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.connector import SourceContext
from agent.mail import POOL_MIN_BATCH, ReaderPool, message_from_bytes
from agent.models import Identity
from tests.test_mail_realworld import HEAD, TEXT, attachment, mixed

ARRIVED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def context(contractor: str = "maria@example.com") -> SourceContext:
    def wants(identity: Identity) -> bool:
        return identity.address == contractor

    return SourceContext(source="inbox", platform="imap", state_dir=Path("/nonexistent"),
                         scratch_dir=Path("/nonexistent"), max_attachment_bytes=1 << 20,
                         wants_attachments=wants, log=logging.getLogger("retainer.test"))


def batch(count: int) -> list[tuple[bytes, datetime | None, dict[str, Any], bool]]:
    items = []
    for n in range(count):
        head = HEAD if n % 3 else HEAD.replace(b"maria@", b"stranger@")
        raw = mixed(TEXT, attachment(b"f%d.pdf" % n, b"%%PDF %d" % n), head=head,
                    msgid=b"<%d@example.com>" % n)
        items.append((raw.replace(b"\n", b"\r\n"), ARRIVED, {"uid": n + 1}, n % 5 == 4))
    return items


def test_the_pool_gives_the_records_read_here_in_order() -> None:
    items = batch(POOL_MIN_BATCH * 2)
    pool = ReaderPool(context(), 2)
    try:
        pooled = pool.read(items)
        assert pool._pool is not None  # it did run in workers
        workers = {p.pid for p in pool._pool._processes.values()}
        assert workers and os.getpid() not in workers
    finally:
        pool.close()
    here = ReaderPool(context(), 0).read(items)
    assert pooled == here
    assert [m.extra["uid"] for m in pooled] == list(range(1, len(items) + 1))
    stored = [m.attachments[0].status for m in pooled]
    # a stranger's file is recorded only, unless the message is read again for a backfill
    assert stored[0] == "not_downloaded" and stored[1] == "stored" and stored[24] == "stored"
    assert here[3] == message_from_bytes(items[3][0], context(), fallback_date=ARRIVED,
                                         extra={"uid": 4})


def test_a_few_messages_are_read_here() -> None:
    pool = ReaderPool(context(), 2)
    assert len(pool.read(batch(POOL_MIN_BATCH - 1))) == POOL_MIN_BATCH - 1
    assert pool._pool is None
    pool.close()


def test_a_worker_that_dies_leaves_the_reading_here(caplog: Any) -> None:
    items = batch(POOL_MIN_BATCH)
    pool = ReaderPool(context(), 1)
    try:
        assert len(pool.read(items)) == len(items)
        for process in pool._pool._processes.values():
            os.kill(process.pid, signal.SIGKILL)
            process.join()
        with caplog.at_level(logging.WARNING, "retainer.mail"):
            again = pool.read(items)
        assert again == ReaderPool(context(), 0).read(items)
        assert "reader process died" in caplog.text
        assert pool._pool is None and pool._broken
    finally:
        pool.close()


def test_workers_that_hang_are_stopped_and_the_batch_read_here(
        monkeypatch: Any, caplog: Any) -> None:
    import time

    import agent.mail

    parent = os.getpid()

    def wants(identity: Identity) -> bool:
        if os.getpid() != parent:  # in a worker: hang, as on a lock held at the fork
            time.sleep(600)
        return True

    monkeypatch.setattr(agent.mail, "POOL_TIMEOUT", 2.0)
    monkeypatch.setattr(agent.mail, "POOL_TIMEOUT_EACH", 0.0)
    hanging = context()
    hanging = SourceContext(**{**{f: getattr(hanging, f) for f in (
        "source", "platform", "state_dir", "scratch_dir", "max_attachment_bytes", "log")},
        "wants_attachments": wants})
    items = batch(POOL_MIN_BATCH)
    pool = ReaderPool(hanging, 2)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "retainer.mail"):
        records = pool.read(items)
    assert time.monotonic() - started < 60
    assert "did not answer in time" in caplog.text and pool._broken and pool._pool is None
    assert records == ReaderPool(hanging, 0).read(items)
    pool.close()


def test_big_attachments_come_back_as_files_the_store_takes_over(tmp_path: Path) -> None:
    import dataclasses
    import hashlib
    import random

    from agent.mail import HANDOVER_MIN
    from agent.store.blobs import Blobs

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    rng = random.Random(7)
    big = [rng.randbytes(HANDOVER_MIN + n * 1000) for n in range(3)]
    items = []
    for n in range(POOL_MIN_BATCH):
        parts = [TEXT, attachment(b"big.pdf", big[n % 3]),
                 attachment(b"small.pdf", b"%%PDF %d" % n)]
        raw = mixed(*parts, msgid=b"<%d@example.com>" % n)
        items.append((raw.replace(b"\n", b"\r\n"), ARRIVED, {"uid": n + 1}, False))
    ctx = dataclasses.replace(context(), scratch_dir=scratch)
    pool = ReaderPool(ctx, 2)
    try:
        pooled = pool.read(items)
    finally:
        pool.close()
    here = ReaderPool(ctx, 0).read(items)
    for got, want in zip(pooled, here, strict=True):
        handed, small = got.attachments
        assert small == want.attachments[1]  # small files come through the pipe
        data = want.attachments[0].data
        assert data is not None and handed.data is None and handed.path is not None
        assert handed.path.parent == scratch and handed.path.read_bytes() == data
        assert handed.path.stat().st_mode & 0o777 == 0o600
        assert handed.handover_sha256 == hashlib.sha256(data).hexdigest()
        assert dataclasses.replace(handed, data=data, path=None, handover_sha256="") \
            == want.attachments[0]
        assert dataclasses.replace(got, attachments=want.attachments) == want
    # the store moves each file in once; copies of the same bytes are deleted
    files, tmp = tmp_path / "files", tmp_path
    files.mkdir()
    blobs = Blobs(tmp_path, files, tmp)  # scratch folders are under tmp/
    for message in pooled:
        handed = message.attachments[0]
        sha, target, size = blobs.put(handed, "big.pdf")
        assert (sha, Path(target).name, size) == (
            handed.handover_sha256, f"{handed.handover_sha256}.pdf", handed.size)
    blobs.sync()
    assert sorted(p.read_bytes() for p in files.iterdir()) == sorted(big)
    assert list(scratch.iterdir()) == []
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files.iterdir())


def test_a_file_that_cannot_be_written_stays_bytes(tmp_path: Path) -> None:
    from agent.mail import HANDOVER_MIN, hand_over
    from agent.models import Attachment

    att = Attachment("a.pdf", data=b"x" * HANDOVER_MIN)
    assert hand_over(att, tmp_path / "missing") == att
    assert hand_over(Attachment("b.pdf", data=b"x"), tmp_path) == Attachment("b.pdf", data=b"x")
    handed = hand_over(att, tmp_path)
    assert handed.path is not None and handed.data is None and handed.size == HANDOVER_MIN


def test_only_scratch_files_with_a_real_digest_are_taken_over(tmp_path: Path) -> None:
    """Anything else given with handover_sha256 is copied: the original stays, and a
    digest that is not one never names a file."""
    import hashlib

    from agent.models import Attachment
    from agent.store.blobs import Blobs

    data = b"work" * 10
    sha = hashlib.sha256(data).hexdigest()
    files, tmp = tmp_path / "data" / "files", tmp_path / "data" / "tmp"
    (tmp / "inbox").mkdir(parents=True)
    files.mkdir()
    outside = tmp_path / "synced" / "a.pdf"
    outside.parent.mkdir()
    outside.write_bytes(data)
    link = tmp / "inbox" / "link"
    link.symlink_to(outside)
    blobs = Blobs(tmp_path / "data", files, tmp)
    for path, digest in [(outside, sha), (link, sha), (tmp / "inbox" / "x", "../../evil")]:
        if not path.exists():
            path.write_bytes(data)
        got = blobs.put(Attachment("a.pdf", path=path, handover_sha256=digest), "a.pdf")
        assert got == (sha, str(files / f"{sha}.pdf"), len(data))
        assert path.read_bytes() == data  # copied, not moved
    blobs.sync()
    assert [p.name for p in files.iterdir()] == [f"{sha}.pdf"]
    assert outside.read_bytes() == data
