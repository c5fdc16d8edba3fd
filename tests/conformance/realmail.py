"""Real-world mail conformance: sync a folder of mail through IMAP and Maildir, count defects.

Usage (from the project root)::

    .venv/bin/python tests/conformance/realmail.py ../shared/corpus/mail

Every file under FOLDER (``*.md`` notes aside) is one message. The script

* builds a Maildir from the files and runs ``retainer sync`` on it (the maildir plugin);
* starts a private Dovecot (tests/servers/dovecot.py), APPENDs the same files to its
  INBOX and runs ``retainer sync`` on it (the imap plugin);
* reads both stores and compares every record with what Python's ``email`` package
  (``policy=default``) reads from the same bytes, and the two records with each other.

Every sender is a contractor in the config, so every attachment that counts as work
becomes a deliverable. Prints one line per figure and exits 1 if any defect is above
zero (2 on a usage error). The files are data: they are read, never copied into the
project.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import email.utils
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.mail import NOT_DELIVERABLE_TYPES, is_signature_name  # noqa: E402
from agent.store import Store  # noqa: E402
from tests.servers.dovecot import running_dovecot  # noqa: E402

OWNER = "owner@conformance.invalid"
ARRIVED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # mtime / INTERNALDATE of every copy
DEFECTS = ("lost", "duplicate ids", "mojibake", "undecoded RFC 2047", "signature deliverables",
           "senders lost", "hash mismatches", "IMAP/Maildir disagreements")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
# UTF-8 read as Latin-1/Windows-1252: a lead byte character followed by continuation ones
_MOJIBAKE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u2018-\u203a\u0152-\u0178\u02c6\u02dc]")


@dataclass
class Reference:
    """What Python's email package reads from one file."""

    sender: str
    subject: str
    text: str
    part_hashes: set[str] = field(default_factory=set)  # every decoded leaf part
    expected: set[str] = field(default_factory=set)  # attachments that are work


def message_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() != ".md" and not p.name.startswith("."))


def normalized(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


def reference(raw: bytes) -> Reference:
    """Python's email package on the file (``policy=default``). Decoded parts from the
    compat32 policy, and from the file with LF line endings, count as Python's too."""
    ref = _reference(normalized(raw))
    for policy in (email.policy.compat32, email.policy.default):
        for variant in {raw, normalized(raw)}:
            with contextlib.suppress(Exception):
                for part in email.message_from_bytes(variant, policy=policy).walk():
                    data = part.get_payload(decode=True)
                    if isinstance(data, bytes):
                        ref.part_hashes.add(hashlib.sha256(data).hexdigest())
    return ref


def _reference(raw: bytes) -> Reference:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    sender = ""
    with contextlib.suppress(Exception):
        values = [str(v) for v in msg.get_all("From", [])]
        for _name, addr in email.utils.getaddresses(values):
            if "@" in addr:
                sender = addr.lower()
                break
    subject = ""
    with contextlib.suppress(Exception):
        subject = str(msg.get("Subject", ""))
    text = ""
    with contextlib.suppress(Exception):
        body = msg.get_body(preferencelist=("plain", "html"))
        if body is not None:
            text = str(body.get_content())
    ref = Reference(sender, subject, text)
    for part in msg.walk():
        if part.is_multipart():
            continue
        try:
            data = part.get_payload(decode=True)
        except Exception:
            continue
        if not isinstance(data, bytes):
            continue
        digest = hashlib.sha256(data).hexdigest()
        ref.part_hashes.add(digest)
        ctype = part.get_content_type()
        name = ""
        with contextlib.suppress(Exception):
            name = part.get_filename() or ""
        if ctype == "application/ms-tnef" or name.lower() == "winmail.dat":
            for inner in _tnef_files(data):
                ref.part_hashes.add(inner)
                ref.expected.add(inner)
            continue
        if (part.get_content_disposition() == "attachment" and data
                and ctype not in NOT_DELIVERABLE_TYPES and not is_signature_name(name)):
            ref.expected.add(digest)
    return ref


def _tnef_files(data: bytes) -> list[str]:
    try:
        from tnefparse import TNEF

        tnef = TNEF(data)
    except Exception:
        return []
    return [hashlib.sha256(bytes(a.data)).hexdigest() for a in tnef.attachments if a.data]


def write_config(path: Path, data: Path, contractors: list[str], source: str) -> None:
    lines = ["[agent]", f"data_dir = {json.dumps(str(data))}",
             f"owner_emails = [{json.dumps(OWNER)}]", "max_attachment_mb = 64", ""]
    for index, address in enumerate(contractors):
        lines += ["[[contractors]]", f'name = "Sender {index}"',
                  f"emails = [{json.dumps(address)}]", ""]
    path.write_text("\n".join(lines) + "\n" + source)


def sync(config: Path, work: Path, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "agent", "--config", str(config), "sync"],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT,
                          env={**os.environ, "HOME": str(work), **env}, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"retainer sync failed ({done.returncode}) for {config}")


def read_store(data: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    store = Store(data, create=False)
    return list(store.iter_messages()), list(store.iter_deliverables())


def maildir_path(files: list[Path], work: Path) -> Path:
    maildir = work / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for index, path in enumerate(files):
        target = maildir / "cur" / f"{index:06d}.conformance:2,S"
        target.write_bytes(path.read_bytes())
        os.utime(target, (ARRIVED.timestamp(), ARRIVED.timestamp()))
    data = work / "maildir-data"
    config = work / "maildir.toml"
    write_config(config, data, senders(files), "\n".join([
        "[[sources]]", 'name = "maildir"', 'platform = "maildir"', "[sources.settings]",
        f"path = {json.dumps(str(maildir))}", ""]))
    sync(config, work, {})
    return data


@contextlib.contextmanager
def imap_path(files: list[Path], work: Path) -> Iterator[Path]:
    with running_dovecot() as server:
        mailbox = server.add_user()
        with mailbox.connect() as imap:  # arrival time as the Maildir files' mtime
            for path in files:
                raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                typ, answer = imap.append("INBOX", "(\\Seen)", ARRIVED, raw)
                if typ != "OK":
                    raise SystemExit(f"the test IMAP server refused {path}: {answer!r}")
        data = work / "imap-data"
        config = work / "imap.toml"
        write_config(config, data, senders(files), mailbox.source_toml(name="imap"))
        sync(config, work, mailbox.env())
        yield data


_SENDERS: list[str] = []


def senders(files: list[Path]) -> list[str]:
    if not _SENDERS:
        found: set[str] = set()
        for path in files:
            sender = reference(path.read_bytes()).sender
            if sender and sender != OWNER:
                found.add(sender)
        _SENDERS.extend(sorted(found))
    return _SENDERS


def by_file(messages: list[dict[str, Any]], key: str) -> dict[int, list[dict[str, Any]]]:
    """Stored messages by the index of the file they came from."""
    found: dict[int, list[dict[str, Any]]] = {}
    for doc in messages:
        extra = doc.get("extra") or {}
        if key == "file":
            name = str(extra.get("file") or "")
            index = int(name.split(".", 1)[0]) if name[:6].isdigit() else -1
        else:
            index = int(extra.get("uid") or 0) - 1
        found.setdefault(index, []).append(doc)
    return found


def fields(doc: dict[str, Any]) -> list[str]:
    names = [str(a.get("filename") or "") for a in doc.get("attachments") or []]
    sender = doc.get("sender") or {}
    return [str(doc.get("subject") or ""), str(doc.get("text") or ""),
            str(sender.get("name") or ""), *names]


def is_mojibake(value: str, ref: str) -> bool:
    if _MOJIBAKE.search(value) and not _MOJIBAKE.search(ref):
        return True
    wide = sum(1 for ch in ref if ord(ch) > 0x24F and ch != "\ufffd")
    ours = sum(1 for ch in value if ord(ch) > 0x24F and ch != "\ufffd")
    return wide >= 4 and ours < wide // 2


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "sender": doc.get("sender"), "direction": doc.get("direction"),
        "subject": doc.get("subject"), "sent_at": doc.get("sent_at"),
        "text": str(doc.get("text") or "").replace("\r\n", "\n").strip(),
        "recipients": doc.get("recipients"),
        "attachments": [(a.get("filename"), a.get("content_type"), a.get("status"),
                         a.get("sha256"), a.get("inline"), a.get("size"))
                        for a in doc.get("attachments") or []],
        "invite": (doc.get("extra") or {}).get("invite"),
    }


def measure(files: list[Path], maildir: Path, imap: Path, verbose: bool) -> Counter[str]:
    counts: Counter[str] = Counter()
    counts["files"] = len(files)
    raws = [p.read_bytes() for p in files]
    first_of: dict[bytes, int] = {}
    copies: dict[int, list[int]] = {}  # first file of each content -> every file with it
    for index, raw in enumerate(raws):
        first = first_of.setdefault(hashlib.sha256(normalized(raw)).digest(), index)
        copies.setdefault(first, []).append(index)
    distinct = sorted(first_of.values())
    counts["distinct"] = len(distinct)
    refs = [reference(raw) for raw in raws]
    stores = {"maildir": (read_store(maildir), "file"), "imap": (read_store(imap), "uid")}
    docs: dict[str, dict[int, list[dict[str, Any]]]] = {}
    problems: list[str] = []

    def note(kind: str, path: str, index: int, detail: str = "") -> None:
        counts[kind] += 1
        name = "/".join(files[index].parts[-2:]) if index >= 0 else ""
        problems.append(f"{kind}: {path} {name} {detail}")

    for path, ((messages, deliverables), key) in stores.items():
        counts[f"stored ({path})"] = len(messages)
        by_index = by_file(messages, key)
        # identical files are one message: its record may name any of them
        found = docs[path] = {first: [d for i in same for d in by_index.get(i, [])]
                              for first, same in copies.items()}
        ids = Counter(d["id"] for d in messages) + Counter(d["id"] for d in deliverables)
        for ident, n in ids.items():
            if n > 1:
                counts["duplicate ids"] += n - 1
                problems.append(f"duplicate ids: {path} {ident} x{n}")
        hashes = {index: {d.get("sha256") for d in deliverables
                          if d.get("message_id") in {m["id"] for m in found.get(index, [])}
                          and d.get("sha256")}
                  for index in distinct}
        for index in distinct:
            if not found.get(index):
                # dropped, or merged into another file's record
                note("lost", path, index)
                continue
            ref = refs[index]
            doc = found[index][0]
            for value in fields(doc):
                if _ENCODED_WORD.search(value):
                    note("undecoded RFC 2047", path, index, repr(value[:80]))
                    break
            for value, ref_value in zip(fields(doc), [ref.subject, ref.text], strict=False):
                if is_mojibake(value, ref_value):
                    note("mojibake", path, index, repr(value[:60]))
                    break
            if ref.sender and (doc.get("sender") or {}).get("address") == "unknown@invalid":
                note("senders lost", path, index, ref.sender)
            ours = hashes[index]
            if ours - ref.part_hashes or ref.expected - ours:
                note("hash mismatches", path, index,
                     f"extra={len(ours - ref.part_hashes)} missing={len(ref.expected - ours)}")
        for doc in deliverables:
            name = str(doc.get("filename") or "")
            if doc.get("content_type") in NOT_DELIVERABLE_TYPES or is_signature_name(name):
                counts["signature deliverables"] += 1
                problems.append(f"signature deliverables: {path} {doc['id']} {name}")
    for index in distinct:
        a, b = docs["maildir"].get(index), docs["imap"].get(index)
        if a and b and comparable(a[0]) != comparable(b[0]):
            left, right = comparable(a[0]), comparable(b[0])
            diff = [k for k in left if left[k] != right[k]]
            note("IMAP/Maildir disagreements", "both", index, ",".join(diff))
    if verbose:
        for line in problems:
            print("  " + line)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true", help="list every defect")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"{args.folder} is not a folder of mail files", file=sys.stderr)
        return 2
    files = message_files(args.folder.resolve())
    if not files:
        print(f"{args.folder} holds no files", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="retainer-realmail-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        maildir = maildir_path(files, work)
        with imap_path(files, work) as imap:
            counts = measure(files, maildir, imap, args.verbose)
    for name in ("files", "distinct", "stored (maildir)", "stored (imap)", *DEFECTS):
        print(f"{name:28} {counts[name]}")
    bad = {name: counts[name] for name in DEFECTS if counts[name]}
    if bad:
        print("FAILED: " + ", ".join(f"{k}={v}" for k, v in bad.items()))
        return 1
    print("ok: no defects")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
