"""Safe filesystem helpers: private atomic writes and sanitized display names.

Everything Retainer writes is created 0600 inside 0700 folders, written to a temp
file first, fsynced and renamed into place, so a crash leaves the old file or the new
one, never half of either.

Derived data (summaries of shards, change marks: anything rebuilt from the records when
lost) is instead rewritten in place and sealed with a CRC-32, so a reader tells a torn
copy from a whole one (:func:`write_derived`, :func:`read_derived`). A rename frees an
inode at every write, and ext4 skips the inodes freed in the last minute or so when it
allocates one: in a long sync that replaced sixteen files a page, creating each temp file
cost more the longer the sync ran (late in a sync of 200,000 messages, perf put 15% of
its CPU time in ext4's inode allocator).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
import zlib
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
TMP_PREFIX = ".tmp-"

_WINDOWS_RESERVED = {
    "CON", "PRN", "AUX", "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}  # fmt: skip
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
MAX_NAME_BYTES = 200


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and any missing parents) as 0700 folders; tighten it if it exists.

    Parents that already exist are left alone; only folders this call creates, and
    ``path`` itself, are made 0700.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
        else:
            folder.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def fsync_path(path: Path) -> None:
    """fsync the file or folder at ``path`` (a folder: the names in it, after a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_path  # what the callers that fsync a folder after a rename call it


def _temp_file(folder: Path) -> tuple[int, str]:
    """A new file ``TMP_PREFIX<random>`` in ``folder``, open for writing: what
    ``tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX)`` makes (0600, created exclusively,
    no symlink followed), without importing ``tempfile`` (and with it ``shutil``,
    ``random``, ``bz2``, ``lzma``: a tenth of a no-op sync's start)."""
    # O_EXCL: never an existing file, nor a symlink planted at the name (POSIX: with
    # O_CREAT it fails on a symlink, wherever it points). os.open's descriptors are
    # not inherited by child processes already (PEP 446).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for _ in range(100):
        name = os.path.join(folder, TMP_PREFIX + os.urandom(6).hex())
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))


def write_private(path: Path, data: bytes, *, sync: bool = True, sync_dir: bool = True) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600.

    ``sync_dir=False`` leaves the folder's fsync (which makes the rename durable) to the
    caller, who may batch several renames in one folder before it.
    """
    fd, tmp = _temp_file(path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync and sync_dir:
        fsync_dir(path.parent)


_SEALED = b'{"sealed":'  # a derived file: {"sealed": <the JSON payload>, "crc32": "<hex>"}
_CRC = b',"crc32":"'  # then 8 hex digits and '"}' and a newline: 21 bytes in all


def seal(payload: bytes) -> bytes:
    """A JSON ``payload`` wrapped with its CRC-32 (what :func:`write_derived` writes): still
    JSON, for anyone who looks; whole only if the CRC matches the bytes between."""
    return _SEALED + payload + _CRC + b'%08x"}\n' % zlib.crc32(payload)


def unseal(data: bytes) -> bytes | None:
    """The payload of sealed ``data``; None when it is not whole (torn by a concurrent
    write or a kill, cut short, never sealed)."""
    if (len(data) < len(_SEALED) + 21 or not data.startswith(_SEALED)
            or data[-21:-11] != _CRC or data[-3:] != b'"}\n'):
        return None
    payload = data[len(_SEALED):-21]
    try:
        crc = int(data[-11:-3], 16)
    except ValueError:
        return None
    return payload if zlib.crc32(payload) == crc else None


def read_derived(path: Path) -> bytes | None:
    """The payload of a derived file; None when it is missing, unreadable or not whole:
    the caller rebuilds it from the records."""
    try:
        return unseal(path.read_bytes())
    except OSError:
        return None


def write_derived(path: Path, payload: bytes) -> None:
    """Rewrite a file of derived data (``payload``: JSON) in place, sealed (:func:`seal`),
    mode 0600.

    No temp file, rename or fsync: a reader meanwhile, or a kill halfway, leaves a copy
    :func:`read_derived` refuses, and the data is rebuilt. A new file, or one that is not
    simply ours (a symlink, another link to it), is written as :func:`write_private` does.
    The mtime is set to the nanosecond, so (inode, mtime, size) stamps of the file still
    change at every write on a filesystem with a coarse clock.
    """
    data = seal(payload)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ELOOP):
            raise
        write_private(path, data, sync=False)  # new, or a symlink replaced
        return
    try:
        st = os.fstat(fd)
        in_place = stat.S_ISREG(st.st_mode) and st.st_nlink == 1
        if in_place:
            if stat.S_IMODE(st.st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], written)
            os.ftruncate(fd, len(data))
            now = time.time_ns()
            os.utime(fd, ns=(now, now))
    finally:
        os.close(fd)
    if not in_place:  # a hard link's other name keeps the old content, as with a rename
        write_private(path, data, sync=False)


def remove_orphan_temps(folder: Path) -> int:
    """Delete temp files a killed process left behind; return how many."""
    removed = 0
    if not folder.is_dir():
        return 0
    for entry in folder.iterdir():
        if entry.name.startswith(TMP_PREFIX) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def sanitize_filename(name: str, *, fallback: str = "attachment") -> str:
    """Turn a name from a message header into a safe, readable single path component.

    Drops any directory part (``../../x``, ``/etc/passwd``, ``C:\\x``), control and
    bidirectional-override characters, NUL bytes and characters Windows forbids;
    renames reserved device names (``CON``); trims to 200 UTF-8 bytes keeping the
    extension. Never returns an empty name, a dot-file, ``.`` or ``..``.
    """
    if not isinstance(name, str):
        name = str(name or "")
    import unicodedata  # not for the read path: only names of files being stored

    name = unicodedata.normalize("NFC", name.replace("\x00", ""))
    parts = [p for p in name.replace("\\", "/").split("/") if _strip(p)]
    name = parts[-1] if parts else ""
    name = "".join(
        ch for ch in name if unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co", "Cn"}
    )
    name = _UNSAFE.sub("_", name)
    name = _strip(name)
    if not name:
        name = _strip(fallback) or "attachment"
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if _reserved(name):
        name = f"_{name}"
        stem = f"_{stem}" if dot else name
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        ext_part = f".{ext}" if dot and len(ext.encode()) <= 16 else ""
        budget = MAX_NAME_BYTES - len(ext_part.encode())
        base = (stem if ext_part else name).encode("utf-8")[:budget].decode("utf-8", "ignore")
        name = _strip(base) + ext_part if _strip(base) else _strip(fallback) + ext_part
    name = _strip(name)
    if not name or _reserved(name) or _UNSAFE.search(name):
        return "attachment"
    return name


def _strip(name: str) -> str:
    """Without leading/trailing whitespace and dots (no dot-files, no ``..``)."""
    previous = None
    while previous != name:
        previous = name
        name = name.strip().strip(".")
    return name


def _reserved(name: str) -> bool:
    """True for Windows device names, with or without an extension (``con.txt``)."""
    return name.split(".")[0].strip().upper() in _WINDOWS_RESERVED
