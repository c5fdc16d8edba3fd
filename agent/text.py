"""Text from remote platforms made safe to store and print.

Display names, room and project titles and file names come from other people's
accounts; a name like ``"\\x1b]0;pwned\\x07\\x1b[2J Maria"`` would set the terminal's
title and clear the screen when ``retainer`` lists it. :func:`clean_line` removes whole
escape sequences (not just the ESC byte, which would leave ``]0;pwned`` behind), then
every other control and bidirectional-override character, as mail headers are cleaned
in :mod:`agent.mail` (which it reuses for undecodable bytes).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from agent.mail import scrub

# ESC/C1 sequences: CSI (ESC [ or 0x9b ... final byte), OSC/DCS/SOS/PM/APC strings (up to BEL or
# ST), and two-byte ESC sequences.
_SEQUENCES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|\x1b[ -/]*[0-~]?",
    re.DOTALL,
)
_DROP = {"Cc", "Cf", "Cs", "Co", "Cn"}
_WS = re.compile(r"\s+")


def clean_line(value: Any) -> str:
    """One line of printable text: escape sequences and control characters removed,
    runs of white space (line breaks included) made one space, ends trimmed."""
    if value is None:
        return ""
    text = scrub(value if isinstance(value, str) else str(value))
    if text.isascii() and text.isprintable():
        return _WS.sub(" ", text).strip()
    text = _SEQUENCES.sub("", text)
    text = "".join(" " if ch in "\t\n\r\x0b\x0c\x85\u2028\u2029" else ch for ch in text
                   if ch in "\t\n\r\x0b\x0c\x85\u2028\u2029"
                   or unicodedata.category(ch) not in _DROP)
    return _WS.sub(" ", text).strip()
