"""agent.mailparse: the fast parse (stand-ins for base64 bodies and boundaries) reads every
message exactly as the plain email parser does; header repair and unfolding."""

from __future__ import annotations

import base64
import random
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.mailparse import fast_parse, parse_message, plain_parse, repair_header, split_parse

CORPUS = Path(__file__).resolve().parent / "data" / "mime"


def shape(message: EmailMessage) -> list[Any]:
    """Everything a reader could look at, part by part (header values of Content-Type
    aside: the fast parse leaves boundary stand-ins there)."""
    out: list[Any] = []
    for part in message.walk():
        headers = [(k, v) for k, v in part.raw_items() if k.lower() != "content-type"]
        payload = part.get_payload(decode=True) if not part.is_multipart() else None
        out.append((part.get_content_type(), part.is_multipart(), headers, payload,
                    part.preamble, part.epilogue, [type(d).__name__ for d in part.defects]))
    return out


def same(raw: bytes) -> None:
    assert shape(fast_parse(raw)) == shape(plain_parse(raw))


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.name)
def test_fast_parse_matches_on_the_mime_corpus(path: Path) -> None:
    same(path.read_bytes().replace(b"\r\n", b"\n"))


def message(rng: random.Random, *, boundary: str, files: int, trailing_blank: bool,
            text: bytes = b"Hello\n\nworld\n") -> bytes:
    parts = [b"Content-Type: text/plain\n\n" + text]
    for index in range(files):
        data = base64.encodebytes(rng.randbytes(rng.randint(1, 9000)))
        parts.append(b"Content-Type: application/pdf; name=\"f%d.pdf\"\n"
                     b"Content-Transfer-Encoding: base64\n\n" % index + data
                     + (b"\n" if trailing_blank else b""))
    sep = b"--" + boundary.encode()
    body = b"".join(sep + b"\n" + p for p in parts) + sep + b"--\n"
    return (b"From: a@example.com\nMIME-Version: 1.0\nContent-Type: multipart/mixed; "
            b"boundary=\"" + boundary.encode() + b"\"\n\npreamble\n" + body + b"epilogue\n")


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(["----=_Part_1_2.3", "abcdefgh", "a'b()+_,./:=?x"]),
       st.integers(0, 3), st.booleans())
def test_fast_parse_matches_on_generated_messages(seed: int, boundary: str, files: int,
                                                  trailing_blank: bool) -> None:
    same(message(random.Random(seed), boundary=boundary, files=files,
                 trailing_blank=trailing_blank))


def test_tricky_inputs_parse_the_same() -> None:
    rng = random.Random(1)
    b64_text = base64.encodebytes(rng.randbytes(6000))
    cases = [
        # a text part whose body looks like base64, and the boundary quoted in text
        message(rng, boundary="BOUNDARY12", files=1, trailing_blank=False,
                text=b"see --BOUNDARY12 above\n\n" + b64_text),
        # one boundary inside another: stand-ins are not used
        message(rng, boundary="outer-b", files=1, trailing_blank=True).replace(
            b"Content-Type: text/plain\n\nHello",
            b"Content-Type: multipart/alternative; boundary=\"outer-bb\"\n\n--outer-bb\n"
            b"Content-Type: text/plain\n\nHello", 1),
        # the stand-in marker already in the message: parsed plainly
        message(rng, boundary="BOUNDARY12", files=1, trailing_blank=False, text=b"rtnr.r.0.\n"),
        # no closing boundary, a base64 body at the very end
        message(rng, boundary="BOUNDARY12", files=2, trailing_blank=False).rsplit(b"--BOUNDARY12--",
                                                                                   1)[0],
    ]
    for raw in cases:
        same(raw)


def test_colon_less_line_is_joined_only_inside_the_header() -> None:
    raw = b"Received: a\nby b; 1 Jan 2026 00:00:00 +0000\nSubject: s\n\nbody line\nno colon\n"
    repaired, defects = repair_header(raw)
    assert repaired.startswith(b"Received: a\n by b;") and defects == ["HeaderLineWithoutColon"]
    assert repaired.endswith(b"\n\nbody line\nno colon\n")
    # no blank line: a body that starts right after the header is left alone
    assert repair_header(b"Subject: s\nbody\nX: y\n") == (b"Subject: s\nbody\nX: y\n", [])


def test_folded_values_are_unfolded_when_read() -> None:
    parsed, _ = parse_message(b"Content-Type: multipart/mixed;\n boundary=\"a\n b\"\n\n--a b\n"
                              b"Content-Type: text/plain\n\nx\n--a b--\n")
    assert parsed.get_boundary() is not None and parsed.is_multipart()
    assert parsed.get_payload(0).get_payload() == "x"


def tree(message: EmailMessage) -> list[Any]:
    """Every attribute the feed parser sets, part by part, header values included."""
    out: list[Any] = []
    stack: list[tuple[int, EmailMessage]] = [(0, message)]
    while stack:
        depth, part = stack.pop()
        payload = part._payload  # type: ignore[attr-defined]
        out.append((depth, type(part), list(part._headers),  # type: ignore[attr-defined]
                    part._unixfrom, part._charset,  # type: ignore[attr-defined]
                    part.preamble, part.epilogue, [type(d) for d in part.defects],
                    part._default_type, part.policy,  # type: ignore[attr-defined]
                    payload if not isinstance(payload, list) else len(payload)))
        if isinstance(payload, list):
            stack.extend((depth + 1, child) for child in reversed(payload))
    return out


def split_same(raw: bytes) -> bool:
    """split_parse gives the feed parser's tree, or declines (None): True if it built one."""
    built = split_parse(raw)
    if built is None:
        return False
    assert tree(built) == tree(plain_parse(raw))
    return True


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.name)
def test_split_parse_matches_on_the_mime_corpus(path: Path) -> None:
    raw, _ = repair_header(path.read_bytes().replace(b"\r\n", b"\n"))
    split_same(raw)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(["----=_Part_1_2.3", "abcdefgh", "a'b()+_,./:=?x"]),
       st.integers(0, 3), st.booleans())
def test_split_parse_matches_on_generated_messages(seed: int, boundary: str, files: int,
                                                   trailing_blank: bool) -> None:
    assert split_same(message(random.Random(seed), boundary=boundary, files=files,
                              trailing_blank=trailing_blank))


def nested(inner_tail: bytes = b"\n", outer_tail: bytes = b"\nepilogue\n",
           preamble: bytes = b"pre\n") -> bytes:
    return (b"From: a@example.com\nSubject: s\n folded\nContent-Type: multipart/mixed;\n"
            b" boundary=\"out\"\n\n" + preamble + b"--out\nContent-Type: multipart/alternative;"
            b" boundary=\"out1\"\n\n--out1\nContent-Type: text/plain\n\nplain\n\n--out1 \t\n"
            b"Content-Type: text/html\n\n<p>x</p>\n--out1--" + inner_tail
            + b"--out\n\nno header here\n--out--" + outer_tail)


@pytest.mark.parametrize("raw", [
    nested(), nested(b"\n\n"), nested(b"\ninner epilogue\n\n"), nested(outer_tail=b""),
    nested(outer_tail=b"\n"), nested(outer_tail=b"\n\n"), nested(preamble=b""),
    nested(preamble=b"\n"), nested(preamble=b"a\n\nb\n"),
    b"Subject: plain\n\nbody\n", b"Subject: plain\n\n", b"Subject: plain\n\nno newline",
    b"\nno header at all\n", b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\n--b--",
    # a part whose body is empty, a part that ends the text without a line break
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\nX: y\n\n--b\nX: z\n\nlast\n--b--",
    b"Subject: =?utf-8?q?caf=C3=A9?=\nX-Raw: caf\xc3\xa9\n\nbody \xff\n",
    b"Subject: a\x0cb\x1cc\x0bd\nX: e\x1d\n\tf\x1e\n\nx\x0by\x0c\n",  # not line ends
])
def test_split_parse_builds_what_the_feed_parser_builds(raw: bytes) -> None:
    assert split_same(raw)


@pytest.mark.parametrize("raw", [
    b"From a@b Mon Jan  1 00:00:00 2026\nSubject: s\n\nx\n",  # an envelope line
    b"Subject: s\r\n\r\nx\r\n", b"Subject: s\n\nx\ry\n",  # CR: lines end there too
    b" folded first\nSubject: s\n\nx\n", b": no name\n\nx\n", b"Bad Name: x\n\nbody\n",
    b"Subject: s\nno blank line after the header",
    b"Content-Type: message/rfc822\n\nSubject: inner\n\nx\n",
    b"Content-Type: message/delivery-status\n\nA: b\n\nC: d\n",
    b"Content-Type: multipart/digest; boundary=b\n\n--b\n\nSubject: x\n\ny\n--b--\n",
    b"Content-Type: multipart/mixed\n\n--b\n\nx\n--b--\n",  # no boundary
    b"Content-Type: multipart/mixed; boundary=b\nContent-Transfer-Encoding: base64\n\n"
    b"--b\n\nx\n--b--\n",
    b"Content-Type: multipart/mixed; boundary=b\n\nno start line\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b--\n",  # closed before it starts
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n",  # never closed
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\n\nx\n--b--\n",  # repeated
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--\n--b\n\ny\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\nX: y\n--b--\n",  # no blank line
    # an inner part that runs into its parent's boundary (defects in the feed parser)
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: multipart/mixed;"
    b" boundary=c\n\n--c\n\nx\n--b\n\ny\n--b--\n",
])
def test_split_parse_leaves_unusual_messages_to_the_feed_parser(raw: bytes) -> None:
    assert split_parse(raw) is None
    parsed, _ = parse_message(raw)  # and the usual parse still reads them
    assert tree(parsed) == tree(plain_parse(repair_header(raw.replace(b"\r\n", b"\n"))[0]))


def test_boundary_lookalikes_are_text() -> None:
    raw = (b"Content-Type: multipart/mixed; boundary=b\n\npre --b\n--b\n\n--bb\n--b x\n"
           b" --b\n--b-\nend\n--b--\n--b-- trailing\n")
    assert split_same(raw)
    parsed = split_parse(raw)
    assert parsed is not None
    assert parsed.get_payload(0).get_payload() == "--bb\n--b x\n --b\n--b-\nend"
