"""The FETCH response parser and its helpers, on responses as Dovecot sends them."""

from __future__ import annotations

from plugins.imap.connector import internal_date, parse_fetch, uid_set


def test_uid_set() -> None:
    assert uid_set([]) == ""
    assert uid_set([5]) == "5"
    assert uid_set([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"
    assert uid_set([10, 9, 1]) == "1,9:10"


def test_parse_fetch_literals_strings_nil_and_nesting() -> None:
    data = [
        (b'1 (UID 7 FLAGS (\\Seen) BODY[1] {5}', b"hello"),
        (b' BODY[HEADER.FIELDS (FROM SUBJECT)] {3}', b"a\r\n"),
        b' X "quo\\"ted" Y NIL Z "NIL" W "")',
        (b'2 (UID 9 BODY[2] {0}', b""),
        b")",
        b"3 (FLAGS ())",  # no UID: an unsolicited update, ignored
    ]
    parsed = parse_fetch(data)
    assert set(parsed) == {7, 9}
    first = parsed[7]
    assert first[b"FLAGS"] == [b"\\Seen"]
    assert first[b"BODY[1]"] == b"hello"
    assert first[b"BODY[HEADER.FIELDS (FROM SUBJECT)]"] == b"a\r\n"
    assert first[b"X"] == b'quo"ted' and first[b"Y"] is None and first[b"Z"] == b"NIL"
    assert first[b"W"] == b""
    assert parsed[9][b"BODY[2]"] == b""


def test_internal_date() -> None:
    assert internal_date(b"01-Mar-2024 09:00:00 +0100").isoformat() == "2024-03-01T09:00:00+01:00"
    assert internal_date(b"garbage") is None
