"""agent.text.clean_line: names from platforms cannot drive the terminal."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.text import clean_line


@pytest.mark.parametrize(("raw", "clean"), [
    ("\x1b]0;pwned\x07\x1b[2JMaria", "Maria"),  # OSC window title + clear screen
    ("\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink
    ("\x1bPq#0;2;0;0;0\x1b\\Ana", "Ana"),  # DCS (sixel)
    ("\x9b31mred\x9b0m", "red"),  # C1 CSI
    ("Ana\u202eevil\u202c", "Anaevil"),  # bidi override
    ("Zoë  O'Neil\r\n", "Zoë O'Neil"),
    ("a\x1bcb", "ab"),  # ESC c (reset)
    ("Tomás Ruiz", "Tomás Ruiz"),
    (None, ""),
    ("bad \udcff byte", "bad \ufffd byte"),
])
def test_clean_line(raw: str | None, clean: str) -> None:
    assert clean_line(raw) == clean


@given(st.text())
def test_never_a_control_character(text: str) -> None:
    out = clean_line(text)
    assert all(unicodedata.category(ch) not in {"Cc", "Cf", "Cs"} for ch in out)
    assert out == out.strip() and "  " not in out
