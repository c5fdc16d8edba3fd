"""agent.files: private atomic writes, private folders and safe file names."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import unicodedata
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agent.files
from agent.files import (
    MAX_NAME_BYTES,
    TMP_PREFIX,
    ensure_private_dir,
    fsync_dir,
    read_derived,
    remove_orphan_temps,
    sanitize_filename,
    seal,
    unseal,
    write_derived,
    write_private,
)
from tests.support import fsspy

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


def test_write_private_is_atomic_and_0600(tmp_path, monkeypatch):
    """Temp file in the same folder -> its data fsynced -> renamed over -> folder fsynced."""
    spy = fsspy.install(monkeypatch)
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    folder = os.path.realpath(tmp_path)
    write_private(target, b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o600
    assert spy.kinds() == ["fsync_file", "replace", "fsync_dir"]
    data_sync, rename, dir_sync = spy.calls
    temp = data_sync.path
    assert os.path.dirname(temp) == folder  # same folder: the rename is atomic
    assert os.path.basename(temp).startswith(TMP_PREFIX)  # orphan clean-up finds it
    assert data_sync.content == b"new"  # written and flushed before the fsync
    assert (rename.path, rename.dest) == (temp, os.path.realpath(target))
    assert rename.content == b"new" and rename.dest_before == b"old"  # never in place
    assert dir_sync.path == folder
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_private_creates_0600_whatever_the_umask(tmp_path):
    old_umask = os.umask(0)
    try:
        write_private(tmp_path / "new.json", b"x")
    finally:
        os.umask(old_umask)
    assert mode(tmp_path / "new.json") == 0o600


def test_write_private_sync_options(tmp_path, monkeypatch):
    spy = fsspy.install(monkeypatch)
    write_private(tmp_path / "a", b"a", sync_dir=False)
    assert spy.kinds() == ["fsync_file", "replace"]  # the caller fsyncs the folder later
    spy.calls.clear()
    write_private(tmp_path / "b", b"b", sync=False)
    assert spy.kinds() == ["replace"]
    spy.calls.clear()
    write_private(tmp_path / "c", b"c", sync=False, sync_dir=True)
    assert spy.kinds() == ["replace"]
    assert (tmp_path / "a").read_bytes() == b"a" and (tmp_path / "b").read_bytes() == b"b"


def test_write_private_closes_every_descriptor(tmp_path):
    before = fsspy.open_fds()
    for i in range(20):
        write_private(tmp_path / "f", str(i).encode())
    assert fsspy.open_fds() == before


def test_write_private_disk_full_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    write_private(target, b"old")
    spy = fsspy.install(monkeypatch)
    spy.fail_fsync_at = 0
    before = fsspy.open_fds()
    with pytest.raises(OSError) as err:
        write_private(target, b"new")
    assert err.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert "replace" not in spy.kinds() and fsspy.open_fds() == before


def test_write_private_leaves_no_temp_on_failure(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        write_private(tmp_path / "dir", b"x")  # cannot replace a folder with a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


def planted_names(monkeypatch, *randoms: bytes) -> list[str]:
    """Make the temp file names predictable (``os.urandom`` gives ``randoms`` in turn, the
    last one for ever after) and return them, so a test can plant something there first."""
    queue = list(randoms)
    monkeypatch.setattr(os, "urandom", lambda n: queue.pop(0) if len(queue) > 1 else queue[0])
    return [TMP_PREFIX + r.hex() for r in randoms]


def test_a_temp_name_already_taken_is_skipped_and_never_followed(tmp_path, monkeypatch):
    """Another process (or an attacker who can write to the folder) got there first: a
    symlink at the temp name must not be opened through, a file there must not be reused."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    folder = tmp_path / "store"
    folder.mkdir()
    link, other, free = planted_names(monkeypatch, b"\x01" * 6, b"\x02" * 6, b"\x03" * 6)
    (folder / link).symlink_to(outside)
    (folder / other).write_text("another writer's temp file")
    write_private(folder / "state.json", b"new")
    assert outside.read_text() == "keep"
    assert (folder / link).is_symlink() and (folder / other).read_text().startswith("another")
    assert (folder / "state.json").read_bytes() == b"new" and mode(folder / "state.json") == 0o600
    assert not (folder / "state.json").is_symlink() and not (folder / free).exists()


def test_the_temp_file_is_not_inherited_by_child_processes(tmp_path, monkeypatch):
    """A secret command or a notifier started while a write is open must not get the
    temp file's descriptor."""
    inheritable = []
    fsync = os.fsync

    def check(fd: int) -> None:
        inheritable.append(os.get_inheritable(fd))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", check)
    write_private(tmp_path / "state.json", b"new", sync_dir=False)
    assert inheritable == [False]


def test_no_free_temp_name_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    (name,) = planted_names(monkeypatch, b"\x07" * 6)
    (tmp_path / name).write_text("taken")
    with pytest.raises(FileExistsError) as err:
        write_private(tmp_path / "state.json", b"new")
    assert err.value.errno == errno.EEXIST and err.value.filename == str(tmp_path)
    assert str(err.value) == f"[Errno {errno.EEXIST}] no free temporary file name: '{tmp_path}'"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_orphan_removed_meanwhile_by_another_process_is_no_error(tmp_path, monkeypatch):
    """Two processes opening the store clean the same folder: an orphan the other one
    removed between our listing and our unlink is not an error."""
    orphan = tmp_path / f"{TMP_PREFIX}abc"
    orphan.write_bytes(b"half")
    is_file = Path.is_file

    def other_process_was_faster(self: Path) -> bool:
        answer = is_file(self)
        self.unlink(missing_ok=True)
        return answer

    monkeypatch.setattr(Path, "is_file", other_process_was_faster)
    remove_orphan_temps(tmp_path)
    assert not orphan.exists()


KILL_DURING_WRITE = """
import os, signal, sys
from pathlib import Path
from agent.files import write_private
os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)  # killed before the rename
write_private(Path(sys.argv[1]), b"half")
"""


def kill_during_write(target):
    """Run write_private in a process that is killed between the fsync and the rename."""
    repo = Path(agent.files.__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(target)], cwd=repo,
                          check=False, timeout=60)
    assert done.returncode == -signal.SIGKILL


def test_kill_before_rename_leaves_old_file_and_a_findable_orphan(tmp_path):
    target = tmp_path / "state.json"
    write_private(target, b"old")
    kill_during_write(target)
    kill_during_write(target)
    assert target.read_bytes() == b"old"
    orphans = [p for p in tmp_path.iterdir() if p.name != "state.json"]
    assert len(orphans) == 2 and all(p.read_bytes() == b"half" for p in orphans)
    (tmp_path / f"{TMP_PREFIX}folder").mkdir()  # not a file: left alone
    (tmp_path / "notes.tmp").write_text("keep")
    assert remove_orphan_temps(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{TMP_PREFIX}folder", "notes.tmp",
                                                          "state.json"]
    assert remove_orphan_temps(tmp_path) == 0


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
    assert remove_orphan_temps(tmp_path / "keep.json") == 0  # not a folder


def test_fsync_dir_syncs_that_folder_and_closes_it(tmp_path, monkeypatch):
    spy = fsspy.install(monkeypatch)
    before = fsspy.open_fds()
    fsync_dir(tmp_path)
    assert spy.dir_fsyncs() == [os.path.realpath(tmp_path)]
    assert fsspy.open_fds() == before


@pytest.mark.parametrize(("raw", "expected"), [
    ("a\x07b.txt", "ab.txt"),  # Cc: control
    ("a\u200bb.txt", "ab.txt"),  # Cf: zero-width space
    ("a\udc80b.txt", "ab.txt"),  # Cs: a lone surrogate from an undecodable header
    ("a\ue000b.txt", "ab.txt"),  # Co: private use
    ("a\u0378b.txt", "ab.txt"),  # Cn: unassigned
    ("Xmas.X", "Xmas.X"),  # only dots and spaces are trimmed
    ("con .txt", "_con .txt"),
    ("cOn", "_cOn"),
    ("e\u0301te\u0301.txt", "\u00e9t\u00e9.txt"),  # NFC: one code point per letter
    ("dir\\sub/file.txt", "file.txt"),
    ("e\x00\u0301.txt", "\u00e9.txt"),  # NUL dropped before composing
])
def test_sanitize_filename_character_classes(raw, expected):
    assert sanitize_filename(raw) == expected


def test_sanitize_filename_non_text_and_fallbacks():
    assert sanitize_filename(None) == "attachment"  # type: ignore[arg-type]
    assert sanitize_filename(1234) == "1234"  # type: ignore[arg-type]
    assert sanitize_filename("///", fallback="scan.pdf") == "scan.pdf"
    assert sanitize_filename("..", fallback=" .notes. ") == "notes"
    assert sanitize_filename("", fallback="...") == "attachment"
    assert sanitize_filename("", fallback="a:b") == "attachment"  # an unsafe fallback
    assert sanitize_filename("", fallback="CON") == "_CON"


def test_sanitize_filename_long_names_edge_cases():
    keep16 = sanitize_filename("a" * 300 + "." + "e" * 16)
    assert keep16.endswith("." + "e" * 16) and len(keep16.encode()) == MAX_NAME_BYTES
    drop17 = sanitize_filename("a" * 300 + "." + "e" * 17)
    assert drop17 == "a" * MAX_NAME_BYTES  # an "extension" that long is not kept
    odd = sanitize_filename("é" * 300 + ".jpeg")  # the cut falls inside a character
    assert odd == "é" * 97 + ".jpeg"
    reserved = sanitize_filename("con." + "a" * 250 + ".pdf")
    assert reserved.startswith("_con.a") and reserved.endswith("a.pdf")
    assert len(reserved.encode()) == MAX_NAME_BYTES
    exact = "b" * (MAX_NAME_BYTES - 4) + ".pdf"
    assert sanitize_filename(exact) == exact
    assert sanitize_filename("c" * MAX_NAME_BYTES) == "c" * MAX_NAME_BYTES
    assert sanitize_filename("c" * (MAX_NAME_BYTES + 1)) == "c" * MAX_NAME_BYTES
    # cut back to a device name by the trimming: still never returned
    assert_safe(sanitize_filename("CON" + " " * 250 + "x.pdf"))


# -- derived data: rewritten in place, sealed -------------------------------------------


def test_write_derived_rewrites_in_place_sealed_as_json(tmp_path, monkeypatch):
    target = tmp_path / "s000001.json"
    payload = b'{"ids":["a","b"]}'
    write_derived(target, payload)  # new: made whole, as write_private does
    assert mode(target) == 0o600 and read_derived(target) == payload
    crc = f"{zlib.crc32(payload):08x}"
    assert json.loads(target.read_bytes()) == {"sealed": {"ids": ["a", "b"]}, "crc32": crc}
    inode, size = target.stat().st_ino, target.stat().st_size
    spy = fsspy.install(monkeypatch)
    write_derived(target, b'{"ids":[]}')  # shorter: the old tail is cut off
    assert spy.calls == []  # no temp file, no fsync, no rename
    assert target.stat().st_ino == inode and target.stat().st_size < size
    assert target.read_bytes() == seal(b'{"ids":[]}') and read_derived(target) == b'{"ids":[]}'
    assert [p.name for p in tmp_path.iterdir()] == ["s000001.json"]


def test_write_derived_over_a_file_of_an_older_format(tmp_path):
    """What an older version left there (a change mark was plain ``clean:<token>``) is
    overwritten from its first byte."""
    mark = tmp_path / "messages.generation"
    mark.write_bytes(b"clean:0123456789abcdef0123456789abcdef0123456789abcdef")
    write_derived(mark, b'"dirty:1"')
    assert read_derived(mark) == b'"dirty:1"' and mark.read_bytes() == seal(b'"dirty:1"')


def test_every_derived_write_leaves_a_stamp_no_earlier_write_had(tmp_path):
    """Readers tell versions apart by (inode, mtime, size): in place, the inode stays, so
    the mtime is set to the nanosecond (a coarse clock could repeat it)."""
    target = tmp_path / "mark.json"
    stamps = set()
    for n in range(8):
        write_derived(target, b'"%d"' % (n % 2))
        st = target.stat()
        stamps.add((st.st_ino, st.st_mtime_ns, st.st_size))
    assert len(stamps) == 8


@pytest.mark.parametrize("damage", ["empty", "cut", "flipped", "torn", "unsealed", "hex",
                                    "tail", "head", "newline"])
def test_a_derived_file_that_is_not_whole_reads_as_missing(tmp_path, damage):
    old, new = seal(b'{"count":1,"ids":["a"]}'), seal(b'{"count":2,"ids":["b"]}')
    data = {"empty": b"", "cut": new[:-1], "flipped": new.replace(b'"b"', b'"c"'),
            "torn": new[:20] + old[20:],  # a kill, or a read, halfway through a rewrite
            "unsealed": b'{"count":2,"ids":["b"]}', "hex": new[:-11] + b'xxxxxxxx"}\n',
            "tail": new[:-3] + b'"}', "head": b'{"sealef":' + new[10:],
            "newline": new[:-1] + b"\r"}[damage]
    (tmp_path / "s.json").write_bytes(data)
    assert read_derived(tmp_path / "s.json") is None
    assert unseal(new) == b'{"count":2,"ids":["b"]}' and unseal(old) == b'{"count":1,"ids":["a"]}'
    assert unseal(seal(b"")) == b""  # the shortest whole file
    assert read_derived(tmp_path / "missing.json") is None


def test_write_derived_on_what_is_not_simply_a_file_of_ours(tmp_path, monkeypatch):
    spy = fsspy.install(monkeypatch)
    theirs = tmp_path / "theirs.json"
    theirs.write_bytes(b"keep")
    link = tmp_path / "link.json"
    link.symlink_to(theirs)
    write_derived(link, b"1")  # the symlink is replaced, not followed
    assert not link.is_symlink() and read_derived(link) == b"1" and theirs.read_bytes() == b"keep"
    write_derived(tmp_path / "a.json", b"1")
    os.link(tmp_path / "a.json", tmp_path / "backup.json")
    write_derived(tmp_path / "a.json", b"2")  # another name for it keeps the old content
    assert read_derived(tmp_path / "backup.json") == b"1"
    assert read_derived(tmp_path / "a.json") == b"2"
    (tmp_path / "a.json").chmod(0o644)
    write_derived(tmp_path / "a.json", b"3")
    assert mode(tmp_path / "a.json") == 0o600 and read_derived(tmp_path / "a.json") == b"3"
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        write_derived(tmp_path / "folder", b"1")
    assert set(spy.kinds()) == {"replace"}  # derived data: never an fsync, whichever way
