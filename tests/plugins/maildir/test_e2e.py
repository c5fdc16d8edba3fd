"""Hostile and malformed mail through the real command line: `retainer sync` of a Maildir.

Every message of tests/data/mime/ (plus a 2 GB message file and an attachment over the
size cap) is delivered to a Maildir; `python -m agent sync` must keep every message, log
each problem clearly, and write nothing outside the data folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.plugins.maildir.util import deliver, mail, make_maildir
from tests.test_files import assert_safe

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT / "tests" / "data" / "mime"


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = here / name
            if path == skip:
                continue
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as handle:
                    head = handle.read(1 << 20)
                found[str(path)] = (path.stat().st_size, hashlib.sha256(head).hexdigest())
            else:
                found[str(path)] = (-1, "dir")
    return found


def write_config(tmp_path: Path, maildir: Path, data: Path) -> Path:
    config = tmp_path / "retainer.toml"
    config.write_text(f"""
[agent]
data_dir = {json.dumps(str(data))}
owner_emails = ["owner@example.com"]
max_attachment_mb = 0.05

[[contractors]]
name = "Maria Lopez"
emails = ["maria@example.com"]

[[sources]]
name = "mail"
platform = "maildir"
[sources.settings]
path = {json.dumps(str(maildir))}
""")
    return config


def run(config: Path, *args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(cwd)}
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd, env=env,
                          check=False)


def test_hostile_maildir_through_retainer_sync(tmp_path):
    maildir = make_maildir(tmp_path / "Mail")
    corpus = sorted(CORPUS.glob("*.eml"))
    for path in corpus:
        deliver(maildir, path.read_bytes(), name=f"1767600000.{path.stem}.host")
    # a message file of 2 GB (sparse): kept by its header, never read whole
    huge = deliver(maildir, mail(900, subject="Final cut, 2 GB"), name="1767600001.huge.host")
    with huge.open("r+b") as handle:
        handle.truncate(2 * 1024**3)
    # an attachment over the (50 KB) cap: recorded and flagged, not downloaded
    deliver(maildir, mail(901, subject="Raw footage", attachment=("footage.mov", b"v" * 100_000)),
            name="1767600002.big-attachment.host")
    expected_messages = len(corpus) + 2

    data = tmp_path / "data"
    home = tmp_path / "home"
    cwd = tmp_path / "work" / "a" / "b"
    home.mkdir()
    cwd.mkdir(parents=True)
    config = write_config(tmp_path, maildir, data)
    passwd_before = Path("/etc/passwd").stat().st_mtime_ns
    before = snapshot(tmp_path, skip=data)

    result = run(config, "sync", cwd=cwd, home=home)
    assert result.returncode == 0, result.stderr
    log = result.stderr
    assert f"{expected_messages} new messages" in result.stdout + log

    # one clear line per problem
    for expected in (
        "attachment name '../../x' is unsafe; it will be stored as 'x'",
        "attachment name '/etc/passwd' is unsafe",
        "attachment name 'CON' is unsafe; it will be stored as '_CON'",
        "attachment name '../../.ssh/authorized_keys' is unsafe",
        "held NUL bytes",
        "declares 2147483648 bytes",
        "NoBoundaryInMultipartDefect",
        "CloseBoundaryNotFoundDefect",
        "InvalidBase64CharactersDefect",
        "UnknownCharset(x-klingon)",
        "EightBitHeader(Subject)",
        "UndecodableTextHeader(Subject: utf-8)",
        "DeeplyNested",
        "TooManyParts",
        "dropped 3 script/iframe/object element(s)",
        "kept its header only",
        "footage.mov' (about 100000 bytes) is over the 52428 byte cap",
    ):
        assert expected in log, f"missing log line: {expected}\n{log[-3000:]}"
    assert "Traceback" not in log

    # nothing written outside the data folder
    after = snapshot(tmp_path, skip=data)
    assert after == before
    assert Path("/etc/passwd").stat().st_mtime_ns == passwd_before
    assert not Path("/x").exists()
    for dirpath, dirnames, filenames in os.walk(data):
        for name in dirnames:
            assert stat.S_IMODE((Path(dirpath) / name).stat().st_mode) == 0o700
        for name in filenames:
            path = Path(dirpath) / name
            if name.endswith(".lock"):  # filelock's empty lock file holds no data
                assert path.stat().st_size == 0
                continue
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert path.resolve().is_relative_to(data.resolve())

    # every message kept
    messages = json.loads(run(config, "messages", "--json", cwd=cwd, home=home).stdout)
    assert len(messages) == expected_messages
    subjects = {m["subject"] for m in messages}
    assert {"Hostile attachment names", "Two hundred levels deep", "Multipart never closed",
            "Final cut, 2 GB", "Qapla'"} <= subjects
    html = next(m for m in messages if m["subject"].startswith("Portfolio"))
    assert "alert" not in html["text"] and "Here is my portfolio." in html["text"]

    # deliverables: safe names, files inside the data folder, big ones flagged
    queue = json.loads(run(config, "deliverables", "--json", cwd=cwd, home=home).stdout)
    names = {d["filename"] for d in queue}
    assert {"x", "passwd", "_CON", "authorized_keys", "evil.sh", "win.ini",
            "invoicefdp.exe", "nulbyte.txt"} <= names
    for item in queue:
        assert_safe(item["filename"])
        if item["path"]:
            path = Path(item["path"])
            path = path if path.is_absolute() else data / path
            assert path.resolve().is_relative_to(data.resolve())
    flagged = {d["filename"]: d for d in queue if d["status"] == "too_large"}
    assert "footage.mov" in flagged and flagged["footage.mov"]["path"] is None
    assert "message.eml" in flagged  # the 2 GB message file

    # and a second sync reads nothing again
    again = run(config, "sync", cwd=cwd, home=home)
    assert again.returncode == 0
    assert "0 new messages" in again.stdout + again.stderr
