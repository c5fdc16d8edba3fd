"""agent.files: private atomic writes, private folders and safe file names."""

from __future__ import annotations

import os
import stat
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.files import (
    MAX_NAME_BYTES,
    ensure_private_dir,
    remove_orphan_temps,
    sanitize_filename,
    write_private,
)

RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
            *(f"LPT{i}" for i in range(1, 10))}


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def assert_safe(name: str) -> None:
    assert name
    assert name not in {".", ".."}
    assert not name.startswith(".")
    assert not name.endswith((".", " "))
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not any(unicodedata.category(ch) in {"Cc", "Cf", "Cs"} for ch in name)
    assert not any(ch in '<>:"|?*' for ch in name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name.split(".")[0].strip().upper() not in RESERVED
    assert os.path.basename(name) == name


@pytest.mark.parametrize(("raw", "expected"), [
    ("report.pdf", "report.pdf"),
    ("../../x", "x"),
    ("/etc/passwd", "passwd"),
    ("../../.ssh/authorized_keys", "authorized_keys"),
    ("..\\..\\win.ini", "win.ini"),
    ("C:\\Users\\x\\evil.bat", "evil.bat"),
    ("CON", "_CON"),
    ("con.txt", "_con.txt"),
    ("LPT1.tar.gz", "_LPT1.tar.gz"),
    ("a\x00.txt", "a.txt"),
    ("invoice\u202efdp.exe", "invoicefdp.exe"),
    ("..", "attachment"),
    ("...", "attachment"),
    ("", "attachment"),
    (".bashrc", "bashrc"),
    ("draft/", "draft"),
    ('what?*<>|":.png', "what_______.png"),
    ("Entwurf für Müller.docx", "Entwurf für Müller.docx"),
])
def test_sanitize_filename_cases(raw, expected):
    assert sanitize_filename(raw) == expected


def test_long_names_keep_their_extension():
    name = sanitize_filename("a" * 300 + ".pdf")
    assert name.endswith(".pdf") and len(name.encode()) == MAX_NAME_BYTES
    multibyte = sanitize_filename("é" * 300 + ".png")
    assert multibyte.endswith(".png") and len(multibyte.encode()) <= MAX_NAME_BYTES
    multibyte.encode("utf-8")  # no half characters
    assert len(sanitize_filename("x" * 10_000).encode()) == MAX_NAME_BYTES


def test_unsafe_fallback_is_not_trusted():
    assert sanitize_filename("", fallback="../x") == "attachment"


@settings(max_examples=400, deadline=None, database=None)
@given(st.text(max_size=400) | st.binary(max_size=300).map(
    lambda b: b.decode("utf-8", "surrogateescape")))
def test_sanitize_filename_always_returns_one_safe_component(raw):
    assert_safe(sanitize_filename(raw))


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.sampled_from(["..", ".", "/", "\\", "CON", "a", "\x00", "\u202e", " ",
                                 "é", ":", "x.pdf", "%2F"]), max_size=40).map("".join))
def test_sanitize_filename_on_traversal_building_blocks(raw):
    assert_safe(sanitize_filename(raw))


def test_write_private_is_atomic_and_0600(tmp_path):
    target = tmp_path / "state.json"
    write_private(target, b"one")
    assert target.read_bytes() == b"one" and mode(target) == 0o600
    target.chmod(0o644)
    write_private(target, b"two")
    assert target.read_bytes() == b"two" and mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_private_leaves_no_temp_on_failure(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        write_private(tmp_path / "dir", b"x")  # cannot replace a folder with a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


def test_ensure_private_dir_makes_new_parents_0700_only(tmp_path):
    tmp_path.chmod(0o755)
    old_umask = os.umask(0o022)
    try:
        leaf = ensure_private_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old_umask)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", leaf):
        assert mode(folder) == 0o700
    assert mode(tmp_path) == 0o755  # an existing parent is not touched
    leaf.chmod(0o755)
    ensure_private_dir(leaf)
    assert mode(leaf) == 0o700


def test_remove_orphan_temps(tmp_path):
    (tmp_path / ".tmp-abc").write_text("half")
    (tmp_path / "keep.json").write_text("{}")
    assert remove_orphan_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]
    assert remove_orphan_temps(tmp_path / "absent") == 0
