"""The IMAP connector against a real (private) Dovecot: sync, cursors, failures, security."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.errors import AuthError, SourceError, TransientError
from agent.models import Message
from plugins.imap.connector import ImapConnector
from plugins.imap.settings import ImapSettings
from tests.servers.dovecot import PASSWORD_ENV, Mailbox

from .util import (
    CONTRACTOR,
    STRANGER,
    connector,
    context,
    corpus,
    make_message,
    run,
    settings,
)

pytestmark = pytest.mark.dovecot


def ids(messages: list[Message]) -> list[str]:
    return [m.remote_id.split("~")[0] for m in messages]  # the Message-ID part


def test_initial_sync_reads_text_attachments_and_cursor(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                                         tmp_path: Path) -> None:
    raws = corpus(23)
    dovecot_mailbox.append_many("INBOX", raws)
    dovecot_mailbox.append("INBOX", make_message(100, html_only=True, inline_image=True))
    dovecot_mailbox.append("INBOX", make_message(
        101, sender=STRANGER, attachments=[("cv.pdf", b"%PDF-stranger", "application/pdf")]))
    conn = connector(dovecot_mailbox, monkeypatch, tmp_path, batch_size=10)
    messages, cursor, pages = run(conn, {})

    assert len(messages) == 25
    assert len(set(ids(messages))) == 25
    assert [p.progress for p in pages] == [(10, 25), (20, 25), (25, 25)]
    status = dovecot_mailbox.status()
    assert cursor == {"v": 1, "folders": {"INBOX": {
        "uidvalidity": status["uidvalidity"], "last_uid": 25, "uidnext": status["uidnext"],
        "highestmodseq": status["highestmodseq"]}}}
    first = messages[0]
    assert first.remote_id.split("~")[0] == "<m0@test.example>"
    assert first.subject == "Message 0 \u00e9t\u00e9"
    assert first.sender.address == CONTRACTOR
    assert first.text == "Hello number 0\nsecond line \u00fcber"
    assert first.html == "<p>Hello number 0</p>\n"  # kept unrendered, as from a Maildir
    assert first.extra["folder"] == "INBOX" and first.extra["uid"] == 1
    # the attachment's bytes arrive exactly as they were sent
    from email import message_from_bytes

    sent = message_from_bytes(raws[0])
    sent_pdf = next(p for p in sent.walk() if p.get_filename() == "file-0.pdf")
    (att,) = first.attachments
    assert att.status == "stored" and att.filename == "file-0.pdf"
    assert att.content_type == "application/pdf"
    assert att.data == sent_pdf.get_payload(decode=True)
    assert sum(1 for m in messages for a in m.attachments if a.status == "stored") == 8

    html_only = messages[23]
    assert html_only.text == "Hello\nnumber 100"
    assert "<script>" in html_only.html and "x()" not in html_only.text
    (logo,) = html_only.attachments
    assert logo.inline and logo.status == "not_downloaded" and logo.data is None
    stranger = messages[24]
    (cv,) = stranger.attachments
    assert cv.status == "not_downloaded" and cv.data is None and cv.size
    assert conn.stats.fetches <= 3 * 4  # batched: metadata + grouped part fetches per batch


def test_noop_sync_costs_one_status_per_folder(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                               tmp_path: Path) -> None:
    dovecot_mailbox.append_many("INBOX", corpus(5))
    dovecot_mailbox.create_folder("Clients")
    dovecot_mailbox.append_many("Clients", corpus(3, start=50))
    folders = ["INBOX", "Clients"]
    _, cursor, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path, folders=folders), {})

    with dovecot_mailbox.rawlog() as log:
        conn = connector(dovecot_mailbox, monkeypatch, tmp_path, folders=folders)
        messages, after, pages = run(conn, cursor)
    assert messages == [] and pages == [] and after == cursor
    # LOGIN happens before the rawlog starts; after it, only STATUS per folder and LOGOUT
    assert log.commands == ["STATUS", "STATUS", "LOGOUT"]


def test_incremental_sync_reads_only_new_mail(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                              tmp_path: Path) -> None:
    dovecot_mailbox.append_many("INBOX", corpus(12))
    _, cursor, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path), {})
    dovecot_mailbox.append_many("INBOX", corpus(4, start=12))

    with dovecot_mailbox.rawlog() as log:
        messages, cursor, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path), cursor)
    assert ids(messages) == [f"<m{i}@test.example>" for i in range(12, 16)]
    assert log.count("EXAMINE") == 1 and log.count("SELECT") == 0  # read-only
    assert log.count("UID SEARCH") == 1
    assert cursor["folders"]["INBOX"]["last_uid"] == 16

    # mail that arrives and is deleted again moves UIDNEXT: one EXAMINE, no FETCH, then quiet
    dovecot_mailbox.append("INBOX", make_message(99))
    dovecot_mailbox.expunge(uids="17")
    with dovecot_mailbox.rawlog() as log:
        messages, cursor, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path), cursor)
    assert messages == [] and log.count("UID FETCH") == 0
    with dovecot_mailbox.rawlog() as log:
        run(connector(dovecot_mailbox, monkeypatch, tmp_path), cursor)
    assert log.commands == ["STATUS", "LOGOUT"]


def test_a_folder_added_to_the_settings_is_read_from_its_start(
        dovecot_mailbox: Mailbox, monkeypatch: Any, tmp_path: Path) -> None:
    dovecot_mailbox.append_many("INBOX", corpus(4))
    dovecot_mailbox.create_folder("Clients.Acme")
    dovecot_mailbox.append_many("Clients.Acme", corpus(3, start=40))
    _, cursor, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path), {})

    with dovecot_mailbox.rawlog() as log:
        conn = connector(dovecot_mailbox, monkeypatch, tmp_path, folders=["INBOX", "Clients.Acme"])
        messages, cursor, _ = run(conn, cursor)
    assert ids(messages) == [f"<m{i}@test.example>" for i in (40, 41, 42)]
    assert {m.extra["folder"] for m in messages} == {"Clients.Acme"}
    assert log.count("EXAMINE") == 1  # INBOX was not opened
    assert set(cursor["folders"]) == {"INBOX", "Clients.Acme"}


def test_missing_folders(dovecot_mailbox: Mailbox, monkeypatch: Any, tmp_path: Path,
                         caplog: pytest.LogCaptureFixture) -> None:
    dovecot_mailbox.append_many("INBOX", corpus(2))
    conn = connector(dovecot_mailbox, monkeypatch, tmp_path, folders=["Nope"])
    with pytest.raises(SourceError, match=r"'Nope' not found; fix sources.settings.folders"):
        run(conn, {})
    conn = connector(dovecot_mailbox, monkeypatch, tmp_path, folders=["INBOX", "Nope"])
    messages, _, _ = run(conn, {})
    assert len(messages) == 2
    assert "'Nope' not found" in caplog.text


def test_uidvalidity_change_rereads_the_folder_with_the_same_ids(
        dovecot_mailbox: Mailbox, monkeypatch: Any, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    dovecot_mailbox.append_many("INBOX", corpus(8))
    first, cursor, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path), {})
    old = dovecot_mailbox.status()
    dovecot_mailbox.recreate()  # every message gets a new UID, and a new UIDVALIDITY
    new = dovecot_mailbox.status()
    assert new["uidvalidity"] != old["uidvalidity"]

    again, cursor, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path), cursor)
    assert sorted(ids(again)) == sorted(ids(first))  # the store upserts these: no duplicates
    assert "UIDVALIDITY of folder 'INBOX' changed" in caplog.text
    assert cursor["folders"]["INBOX"]["uidvalidity"] == new["uidvalidity"]
    assert cursor["folders"]["INBOX"]["uidnext"] == new["uidnext"]
    nothing, _, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path), cursor)
    assert nothing == []


@pytest.mark.parametrize("prefetch", [False, True])
def test_dropped_connection_is_reopened_and_resumed(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                                    tmp_path: Path, prefetch: bool) -> None:
    dovecot_mailbox.append_many("INBOX", corpus(60))
    conn = connector(dovecot_mailbox, monkeypatch, tmp_path, batch_size=5, prefetch=prefetch)
    seen: list[str] = []
    kills = 0
    try:
        for number, page in enumerate(conn.fetch({})):
            seen.extend(r.remote_id.split("~")[0] for r in page.records)
            if number in (0, 6):  # the prefetching thread is at most two pages ahead
                kills += dovecot_mailbox.kick()
    finally:
        conn.close()
    assert kills >= 2
    assert sorted(seen) == sorted(f"<m{i}@test.example>" for i in range(60))
    assert len(seen) == 60  # nothing lost, nothing twice
    assert conn.stats.reconnects >= 2


def test_too_many_drops_raise_transient_and_the_next_sync_resumes(
        dovecot_mailbox: Mailbox, monkeypatch: Any, tmp_path: Path) -> None:
    dovecot_mailbox.append_many("INBOX", corpus(20))
    conn = connector(dovecot_mailbox, monkeypatch, tmp_path, batch_size=5, max_reconnects=0,
                     prefetch=False)
    seen: list[str] = []
    cursor: dict[str, Any] = {}
    with pytest.raises(TransientError, match="the next sync resumes"):
        try:
            for page in conn.fetch({}):
                seen.extend(r.remote_id.split("~")[0] for r in page.records)
                cursor = dict(page.cursor or {})
                dovecot_mailbox.kick()
        finally:
            conn.close()
    assert len(seen) == 5
    rest, _, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path), cursor)
    assert sorted(seen + ids(rest)) == sorted(f"<m{i}@test.example>" for i in range(20))
    assert len(seen) + len(rest) == 20


def test_wrong_password_is_an_auth_error(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                         tmp_path: Path) -> None:
    monkeypatch.setenv("WRONG_PW", "not-the-password-123")
    values = dovecot_mailbox.settings() | {"password": {"env": "WRONG_PW"}}
    conn = ImapConnector(ImapSettings.model_validate(values), context(tmp_path))
    with pytest.raises(AuthError) as raised:
        run(conn, {})
    message = str(raised.value)
    assert "sources.settings.username and sources.settings.password" in message
    assert dovecot_mailbox.user in message
    assert "not-the-password-123" not in message


def test_unreachable_server_is_transient(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                         tmp_path: Path) -> None:
    from tests.servers.dovecot import free_port

    conn = connector(dovecot_mailbox, monkeypatch, tmp_path, port=free_port())
    with pytest.raises(TransientError, match="cannot connect"):
        run(conn, {})


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_self_signed_certificate_needs_ca_file(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                               tmp_path: Path, security: str) -> None:
    dovecot_mailbox.append_many("INBOX", corpus(2))
    server = dovecot_mailbox.server
    port = server.tls_port if security == "tls" else server.port
    for host in ("127.0.0.1", "localhost"):
        conn = connector(dovecot_mailbox, monkeypatch, tmp_path, security=security, port=port,
                         host=host, ca_file=None)
        with pytest.raises(SourceError, match=r"set sources\.settings\.ca_file") as raised:
            run(conn, {})
        assert not isinstance(raised.value, TransientError | AuthError)
        conn = connector(dovecot_mailbox, monkeypatch, tmp_path, security=security, port=port,
                         host=host, ca_file=str(server.cert))
        messages, _, _ = run(conn, {})
        assert len(messages) == 2


def test_a_ca_file_of_another_server_is_refused(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                                tmp_path: Path) -> None:
    from tests.servers.dovecot import make_cert

    (tmp_path / "other").mkdir()
    other, _ = make_cert(tmp_path / "other")
    conn = connector(dovecot_mailbox, monkeypatch, tmp_path, security="tls",
                     port=dovecot_mailbox.server.tls_port, ca_file=str(other))
    with pytest.raises(SourceError, match="could not be verified"):
        run(conn, {})


def test_tls_against_a_plain_port_says_what_to_check(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                                     tmp_path: Path) -> None:
    conn = connector(dovecot_mailbox, monkeypatch, tmp_path, security="tls",
                     port=dovecot_mailbox.server.port)
    with pytest.raises(SourceError, match="matches the port"):
        run(conn, {})


def test_security_none_only_for_loopback(monkeypatch: Any) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    base = {"username": "me", "password": {"env": PASSWORD_ENV}, "security": "none"}
    for host in ("imap.example.com", "10.0.0.5", "192.168.1.1", "::ffff:8.8.8.8"):
        with pytest.raises(ValidationError, match=r"only allowed for 127\.0\.0\.1"):
            ImapSettings.model_validate(base | {"host": host})
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert ImapSettings.model_validate(base | {"host": host}).effective_port == 143
    tls = ImapSettings.model_validate(base | {"host": "imap.example.com", "security": "tls"})
    assert tls.effective_port == 993 and tls.ca_file is None
    # there is no option that turns certificate checks off
    for key in ("verify", "insecure", "tls_verify", "check_certificate"):
        with pytest.raises(ValidationError):
            ImapSettings.model_validate(base | {"host": "h.example", "security": "tls", key: False})
    with pytest.raises(ValidationError, match="does not exist"):
        ImapSettings.model_validate(base | {"host": "h.example", "ca_file": "/nonexistent.pem"})
    with pytest.raises(ValidationError, match="never written inline"):
        ImapSettings.model_validate(base | {"host": "localhost", "password": "plain"})


HOSTILE_NAMES = [
    "../../../etc/passwd",
    "..\\..\\windows\\system32\\evil.dll",
    "/absolute/path.sh",
    "con.txt",
    ".hidden",
    "a" * 600 + ".pdf",
    "name\u202eexe.pdf",
    "semi;colon\"quote'.txt",
]


def test_hostile_attachment_names_and_sizes(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                            tmp_path: Path) -> None:
    files = [(name, f"content {i}".encode(), "application/octet-stream")
             for i, name in enumerate(HOSTILE_NAMES)]
    dovecot_mailbox.append("INBOX", make_message(1, attachments=files))
    # a part that declares 2 GB in its Content-Disposition, and one really over the cap
    big = b"B" * 300_000
    raw = make_message(2, attachments=[("declared.bin", b"small", "application/octet-stream"),
                                       ("big.bin", big, "application/octet-stream")])
    raw = raw.replace(b'filename="declared.bin"', b'filename="declared.bin"; size=2147483648')
    dovecot_mailbox.append("INBOX", raw)
    ctx = context(tmp_path, max_attachment_bytes=200_000)
    with dovecot_mailbox.rawlog() as log:
        messages, _, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path, ctx=ctx), {})
    first, second = messages
    assert [a.filename for a in first.attachments] == HOSTILE_NAMES  # the store sanitizes
    assert [a.data for a in first.attachments] == [f"content {i}".encode()
                                                  for i in range(len(HOSTILE_NAMES))]
    declared, too_big = second.attachments
    assert declared.status == "stored" and declared.data == b"small" and declared.size == 5
    assert too_big.status == "too_large" and too_big.data is None
    assert too_big.size is not None and too_big.size >= 300_000
    assert "over the 200000 byte cap" in too_big.note
    # each message was fetched whole, once, and read like a Maildir file
    assert sum("BODY.PEEK[]" in line for line in log.raw_lines()) == 1


def test_a_message_over_the_cap_is_kept_by_its_header(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                                      tmp_path: Path) -> None:
    import plugins.imap.connector as imap

    monkeypatch.setattr(imap, "MIN_MESSAGE_CAP", 100_000)
    raw = make_message(1, attachments=[("work.zip", b"z" * 200_000, "application/zip")])
    dovecot_mailbox.append_many("INBOX", [raw, make_message(2)])
    ctx = context(tmp_path, max_attachment_bytes=10_000)
    with dovecot_mailbox.rawlog() as log:
        messages, _, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path, ctx=ctx), {})
    big, small = messages
    assert big.subject == "Message 1 \u00e9t\u00e9" and big.remote_id.startswith("<m1@test.example>")
    (placeholder,) = big.attachments
    assert placeholder.status == "too_large" and placeholder.data is None
    assert big.extra["too_large"] > 200_000 and big.extra["uid"] == 1
    assert small.text.startswith("Hello number 2")
    whole = [line for line in log.raw_lines() if "BODY.PEEK[]" in line]
    assert len(whole) == 1 and "UID FETCH 2 " in whole[0]  # the big one: header only
    assert any("UID FETCH 1 (UID BODY.PEEK[HEADER])" in line for line in log.raw_lines())


def test_header_hash_is_the_id_without_message_id(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                                  tmp_path: Path) -> None:
    raw = make_message(5).replace(b"Message-ID: <m5@test.example>\n", b"")
    assert b"Message-ID" not in raw
    dovecot_mailbox.append("INBOX", raw)
    dovecot_mailbox.append("INBOX", raw)  # the same mail twice is one message
    messages, _, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path), {})
    assert len(messages) == 2
    assert messages[0].remote_id == messages[1].remote_id
    assert messages[0].remote_id.startswith("sha256:")
    assert len(messages[0].remote_id) == len("sha256:") + len(hashlib.sha256().hexdigest())


def test_should_stop_ends_after_a_page(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                       tmp_path: Path) -> None:
    dovecot_mailbox.append_many("INBOX", corpus(20))
    ctx = context(tmp_path, stop_after=1)
    conn = connector(dovecot_mailbox, monkeypatch, tmp_path, ctx=ctx, batch_size=5)
    first, cursor, _ = run(conn, {})
    assert 0 < len(first) < 20
    rest, _, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path, batch_size=5), cursor)
    assert sorted(ids(first) + ids(rest)) == sorted(f"<m{i}@test.example>" for i in range(20))


def test_settings_resolve_the_password_and_hide_it(dovecot_mailbox: Mailbox, monkeypatch: Any) -> None:
    s = settings(dovecot_mailbox, monkeypatch)
    assert s.password.get_secret_value() == dovecot_mailbox.password
    assert dovecot_mailbox.password not in repr(s)


@pytest.mark.parametrize("prefetch", [False, True])
def test_big_messages_are_fetched_in_pieces(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                            tmp_path: Path, prefetch: bool) -> None:
    import random

    big = random.Random(3).randbytes(9 * 1024 * 1024 + 123)  # base64: ~12.5 MB on the wire
    dovecot_mailbox.append("INBOX", make_message(1, attachments=[
        ("small.bin", b"tiny", "application/octet-stream"),
        ("video.mp4", big, "video/mp4")]))
    dovecot_mailbox.append_many("INBOX", corpus(3, start=2))
    ctx = context(tmp_path)
    conn = connector(dovecot_mailbox, monkeypatch, tmp_path, ctx=ctx, prefetch=prefetch)
    with dovecot_mailbox.rawlog() as log:
        seen, _, _ = run(conn, {})
    assert len(seen) == 4
    small, video = seen[0].attachments
    assert small.data == b"tiny"
    assert video.status == "stored" and video.data == big and video.size == len(big)
    pieces = [line for line in log.raw_lines() if "BODY.PEEK[]<" in line]
    assert len(pieces) == 4 and all("UID FETCH 1 " in line for line in pieces)
