"""agent.mail's header fast paths give exactly what the general code gives.

``decode_header_value`` skips RFC 2047 decoding for plain ASCII, ``parse_addresses``
skips ``email.utils.getaddresses`` for plain address lists, and ``header_info`` reads
the fields in one pass. Each is compared with the slow route on tricky values, on
generated values, and on whole header blocks (the hostile MIME corpus included).
"""

from __future__ import annotations

import email.utils
import os
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.mail import (
    HeaderInfo,
    _decode_header_text,
    _simple_addresses,
    decode_header_value,
    fix_8bit_headers,
    header_fields,
    header_info,
    header_str,
    parse_addresses,
    parse_header_bytes,
    split_header,
)
from agent.models import Identity

CORPUS = Path(__file__).parent / "data" / "mime"
EXAMPLES = int(os.environ.get("RETAINER_FUZZ_EXAMPLES", "300"))

TRICKY = [
    "",
    "   ",
    "Liam Jensen <liam@smithcrate.example>",
    '"Liam Jensen" <liam@smithcrate.example>',
    "liam@smithcrate.example",
    "<liam@smithcrate.example>",
    "LIAM@Smithcrate.Example",
    '"Doe, John" <john@example.com>',
    '"Doe, John" <john@example.com>, Jane <jane@example.com>',
    "a@example.com, b@example.com,c@example.com",
    "a@example.com,",
    ",a@example.com",
    "a@example.com,, b@example.com",
    "J. Q. Public <jq@example.com>",
    "O'Brien <ob@example.com>",
    "john@example.com (John Doe)",
    "John (the boss) <john@example.com>",
    "undisclosed-recipients:;",
    "Team: a@example.com, b@example.com;",
    '"a\\"b" <ab@example.com>',
    '"" <empty@example.com>',
    '"<fake@evil.example>" <real@example.com>',
    "Jo\"hn <j@example.com>",
    "a@b@c.example",
    "a..b@example.com",
    ".a@example.com",
    "a@example.com.",
    "a@[192.0.2.1]",
    "Name <a@example.com> trailing",
    "Name <a@example.com",
    "no address at all",
    "=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.de>",
    "=?utf-8?q?Doe=2C_John?= <john@example.com>",
    "=?iso-8859-1?q?Andr=E9?= <andre@example.fr>, =?utf-8?b?5byg5LiJ?= <zhang@example.cn>",
    "=?utf-8?q?broken",
    "=?unknown-charset?q?x?= <x@example.com>",
    "Jörg Müller <joerg@example.de>",
    "jörg@müller.example",
    "Ma\x00ria <maria@example.com>",
    "maria@exa\x00mple.com",
    "Maria\r\n <maria@example.com>",
    "Maria\n\t<maria@example.com>",
    "Maria  Lopez   <maria@example.com>",
    "Maria\xa0Lopez <maria@example.com>",
    "Maria\x7f <maria@example.com>",
    "Caf\udce9 <cafe@example.com>",  # a raw 8-bit byte as the parser hands it over
    "Subject with =? but not encoded",
    "Re: [ticket #42] deploy\tfailed",
]


def _same_addresses(text: str) -> None:
    fast = _simple_addresses([text])
    if fast is not None:
        assert fast == email.utils.getaddresses([text])


@pytest.mark.parametrize("value", TRICKY)
def test_fast_paths_match_the_general_code_on_tricky_values(value: str) -> None:
    decoded = decode_header_value(value)
    assert decoded == _decode_header_text(header_str(value))
    _same_addresses(decoded)


@pytest.mark.parametrize("value", [
    "Liam Jensen <liam@smithcrate.example>",
    '"Liam Jensen" <liam@smithcrate.example>',
    '"Doe, John" <john@example.com>, Jane <jane@example.com>',
    "a@example.com, b@example.com,c@example.com",
    "Jörg Müller <joerg@example.de>",
])
def test_common_address_lists_take_the_fast_path(value: str) -> None:
    pairs = _simple_addresses([value])
    assert pairs is not None
    assert pairs == email.utils.getaddresses([value])


def test_multiple_values_are_parsed_like_one_joined_list() -> None:
    values = ["Maria <MARIA@example.com>", '"Doe, John" <john@example.com>', "x@example.com"]
    assert _simple_addresses(values) == email.utils.getaddresses(values)
    assert parse_addresses(values) == (
        Identity("email", "maria@example.com", "Maria"),
        Identity("email", "john@example.com", "Doe, John"),
        Identity("email", "x@example.com", ""),
    )


_PIECES = st.sampled_from([
    "a", "Z", "0", " ", "  ", ".", "@", "<", ">", ",", '"', "\\", "(", ")", "[", "]", ":", ";",
    "'", "-", "+", "é", "\xa0", "\t", "\r\n ", "\n", "\x00", "\x7f", "=?", "?=", "\udce9",
    "liam", "example.com", "=?utf-8?q?J=C3=B6rg?=", "=?utf-8?b?Sm9yZw==?=", '"Doe, J"',
    " <a@b.example>", "a@b.example", ", ",
])


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join))
def test_fast_paths_match_the_general_code_on_generated_values(value: str) -> None:
    decoded = decode_header_value(value)
    assert decoded == _decode_header_text(header_str(value))
    _same_addresses(decoded)


_NAMES = st.sampled_from(["", "Liam", "Liam Jensen", '"Liam Jensen"', '"Doe, John"', "J. Doe",
                          '"a\\"b"', "Jörg", "..", "O'Brien", '"<x@y.example>"', "a.b", "(c)"])
_ADDRS = st.sampled_from(["a@b", "A.B@C.example", "a..b@c", ".a@b", "a@b.", "a@@b", "a@b@c",
                          "jörg@x.de", "a+b@c-d.example", "o'b@x.example", "a@[192.0.2.1]"])
_MAILBOX = st.tuples(_NAMES, _ADDRS, st.sampled_from(["{a}", "{n} <{a}>", "{n}<{a}>"])).map(
    lambda t: t[2].format(n=t[0], a=t[1]))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(_MAILBOX, min_size=1, max_size=4),
       st.sampled_from([", ", ",", " , ", " ,", ",,"]))
def test_address_fast_path_matches_getaddresses_on_generated_lists(
        mailboxes: list[str], separator: str) -> None:
    _same_addresses(decode_header_value(separator.join(mailboxes)))


# -- whole header blocks ------------------------------------------------------------------

def _slow_header_info(raw_header: bytes, fallback: datetime) -> HeaderInfo:
    """header_info from the email parser's fields (Message.get per field)."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw_header)
    fix_8bit_headers(headers)
    return header_info(headers, raw_header, fallback)


HEADER_BLOCKS = [
    b"From: Maria <maria@example.com>\r\nFrom: Second <second@example.com>\r\n"
    b"To: a@example.com\r\nCc: \"Doe, John\" <john@example.com>\r\nTo: B <b@example.com>\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= menu\r\nDate: Mon, 02 Jan 2023 03:01:01 -0500\r\n"
    b"Message-ID: <1@example.com>\r\nReferences: <0@example.com>\r\n <00@example.com>\r\n",
    b"fRoM: LOUD@EXAMPLE.COM\nsubject: lower-case names\nmessage-id: <x@y>\n",
    b"From: Jos\xc3\xa9 <jose@example.com>\nTo: Andr\xe9 <andre@example.fr>\n"
    b"Subject: Caf\xe9 \xc3\xa9\n",
    b"From: undisclosed-recipients:;\nTo: Team: a@example.com, b@example.com;\n",
    b"Subject: folded\r\n\tsubject  line\r\nIn-Reply-To: <r@example.com>\r\n",
    b"Sender: only-sender@example.com\nDate: not a date\n",
    b"",
]


@pytest.mark.parametrize("raw", HEADER_BLOCKS + [
    split_header(path.read_bytes())[0] for path in sorted(CORPUS.glob("*.eml"))
])
def test_parse_header_bytes_matches_the_general_code(raw: bytes) -> None:
    fallback = datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_header_bytes(raw, fallback) == _slow_header_info(raw, fallback)


def test_first_field_wins_and_every_recipient_field_counts() -> None:
    info = parse_header_bytes(HEADER_BLOCKS[0])
    assert info.sender == Identity("email", "maria@example.com", "Maria")
    assert [r.address for r in info.recipients] == [
        "a@example.com", "b@example.com", "john@example.com"]
    assert info.subject == "Café menu"
    assert info.references == ("0@example.com", "00@example.com")


# -- the header block reader ---------------------------------------------------------------

def _parser_fields(raw: bytes) -> list[tuple[str, Any]]:
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    fix_8bit_headers(headers)
    return list(headers.raw_items())


_LINES = st.sampled_from([
    b"From: Maria <maria@example.com>", b"To: a@example.com, b@example.com", b"Cc:",
    b"Subject: hello", b"Subject:\tpadded  ", b" continued", b"\tcontinued too", b" ",
    b"From sender@example.com Mon Jan  2 03:01:01 2023", b"From nobody", b": no name",
    b"X-Weird-Name!: v", b"Bad Name: v", b"no colon at all", b"", b"Subject: Caf\xc3\xa9",
    b"From: Andr\xe9 <a@example.fr>", b"Message-ID: <1@example.com>", b"X:a:b", b"x\xff: v",
    b"Date: Mon, 02 Jan 2023 03:01:01 -0500", b"Subject: a\x00b", b"To: \x0bodd\x1c",
])


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.tuples(_LINES, st.sampled_from([b"\r\n", b"\n", b"\r"])), max_size=10),
       st.booleans())
def test_header_fields_read_blocks_like_the_email_parser(
        lines: list[tuple[bytes, bytes]], last_newline: bool) -> None:
    raw = b"".join(line + end for line, end in lines)
    if not last_newline and lines:
        raw = raw[: -len(lines[-1][1])]
    assert header_fields(raw) == _parser_fields(raw)
    fallback = datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_header_bytes(raw, fallback) == _slow_header_info(raw, fallback)


@pytest.mark.parametrize("raw", [
    *HEADER_BLOCKS,
    b"From someone@example.com Mon Jan  2 03:01:01 2023\n cont\nSubject: s\n",
    b"Subject: s\nFrom misplaced\n\tcont\nTo: t@example.com\nFrom last-line\n",
    b": nameless\n cont\nTo: t@example.com\n",
    b"\tfirst line continued\nSubject: s\r\n\r\nbody: not a header\n",
    b"Subject: s\nnot a header\nTo: t@example.com\n",
])
def test_header_fields_match_the_email_parser(raw: bytes) -> None:
    assert header_fields(raw) == _parser_fields(raw)
