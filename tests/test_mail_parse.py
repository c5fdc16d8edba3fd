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

from agent.mailparse import fast_parse, parse_message, plain_parse, repair_header

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
