"""The FETCH response parser and BODYSTRUCTURE helpers, on responses as Dovecot sends them."""

from __future__ import annotations

from plugins.imap.connector import decode_transfer, internal_date, param, parse_fetch, uid_set, walk_structure


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


def test_walk_structure_sections() -> None:
    body = parse_fetch([
        b'1 (UID 1 BODYSTRUCTURE ((("text" "plain" ("charset" "iso-8859-1") NIL NIL '
        b'"quoted-printable" 10 1 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "base64" 20 1 NIL NIL NIL NIL) '
        b'"alternative" ("boundary" "a") NIL NIL NIL)'
        b'("image" "png" NIL "<logo@x>" NIL "base64" 30 NIL ("inline" NIL) NIL NIL)'
        b'("application" "pdf" ("name*" "utf-8\'\'%E2%82%AC%20plan.pdf") NIL NIL "base64" 40 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 50 ("date" "subj" NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("text" "plain" NIL NIL NIL "7bit" 5 1 NIL NIL NIL NIL) 3 NIL '
        b'("attachment" ("filename*0" "fw" "filename*1" "d.eml")) NIL NIL)'
        b' "mixed" ("boundary" "m") NIL NIL NIL))'])[1][b"BODYSTRUCTURE"]
    defects: list[str] = []
    parts = walk_structure(body, defects)
    assert defects == []
    assert [(p.section, p.content_type) for p in parts] == [
        ("1.1", "text/plain"), ("1.2", "text/html"), ("2", "image/png"),
        ("3", "application/pdf"), ("4", "message/rfc822")]
    plain, _html, logo, pdf, forwarded = parts
    assert plain.charset == "iso-8859-1" and not plain.is_attachment
    assert logo.is_attachment and logo.is_inline_image and logo.content_id == "<logo@x>"
    assert pdf.filename == "\u20ac plan.pdf" and pdf.size == 40 and pdf.encoding == "base64"
    assert forwarded.is_attachment and forwarded.filename == "fwd.eml"


def test_single_part_and_broken_structures() -> None:
    single = parse_fetch(
        [b'1 (UID 1 BODYSTRUCTURE ("TEXT" "PLAIN" NIL NIL NIL "7BIT" 12 1 NIL NIL NIL NIL))'])
    parts = walk_structure(single[1][b"BODYSTRUCTURE"], [])
    assert [(p.section, p.content_type, p.encoding) for p in parts] == [("1", "text/plain", "7bit")]
    defects: list[str] = []
    assert walk_structure(None, defects) == [] and defects == ["BadBodyStructure"]
    deep: list[object] = [b"x"]
    for _ in range(300):
        deep = [deep, b"mixed"]
    defects = []
    walk_structure(deep, defects)
    assert "TooDeeplyNested" in defects


def test_param_rfc2231_and_transfer_decoding() -> None:
    assert param({"filename": "a.pdf"}, "filename") == "a.pdf"
    assert param({"filename*": "iso-8859-1''caf%E9.txt"}, "filename") == "caf\u00e9.txt"
    assert param({"name*0*": "utf-8''%C3%BC", "name*1": "ber.txt"}, "name") == "\u00fcber.txt"
    assert param({}, "filename") == ""
    defects: list[str] = []
    assert decode_transfer(b"aGVs\r\nbG8=\r\n", "base64", defects) == b"hello"
    assert decode_transfer(b"caf=C3=A9 =\r\nok", "quoted-printable", defects) == b"caf\xc3\xa9 ok"
    assert decode_transfer(b"aGVsbG8", "base64", defects) == b"hel"  # bad padding: kept what decodes
    assert defects == ["InvalidBase64"]
    assert internal_date(b"01-Mar-2024 09:00:00 +0100").isoformat() == "2024-03-01T09:00:00+01:00"
    assert internal_date(b"garbage") is None
