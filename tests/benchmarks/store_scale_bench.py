"""Benchmark: does the store stay linear and flat from 10,000 to 200,000 messages?

Two shapes of mailbox, each written from scratch at every size through the real write
path (:meth:`Store.commit_page` in pages of 200, the maildir default, and the source's
cursor after each page, as ``retainer sync`` does):

- ``month``: every message in one calendar month (a shared agency inbox, a launch);
- ``spread``: about 2,500 messages a month, so 200,000 span almost seven years.

200 contractors, a fifth of the messages the owner's, one inbound message in 40 carries
a file (a deliverable). Each full sync runs in its own process, so its peak RSS is its
own. Then the largest size again in lockstep with syncs of the smallest (:func:`lockstep`:
a page of each in turns, on one CPU), which gives the ratio of their times per message
without the drift of a shared box between one process and the next. Then, on the
largest store of each shape: 100 new messages as one more sync (fresh process, store
opened, page committed, cursor moved; three runs, median), and read commands as fresh
``python -m agent`` processes (five runs, median), beside the time Python takes to import
the command line at all; last, the whole of ``retainer sync`` of 100 new messages from a
Maildir, as a user runs it (builtin plugins, the read models of ``report`` and ``review``
in use, so the sync refreshes them): the time it reports, the process's wall and CPU time
and its peak RSS, and the first ``messages --limit 20`` after it.

    python tests/benchmarks/store_scale_bench.py [--sizes 10000,50000,200000]
        [--shapes month,spread] [--work DIR] [--runs 5] [--repeat 3] [--fill-only]
        [--lockstep 2] [--turn 1]
    python tests/benchmarks/store_scale_bench.py --upgrade 50000

``--upgrade N`` only times opening (and so upgrading) a store of N messages rewritten in
the old one-file-per-month layout (schema 1).

Prints one line per run as it finishes and a table at the end. Targets (issue 14):
time per message at the largest size within 1.2x of the smallest, in both shapes; peak
RSS at most 150 MB for every run; 100 new messages into 200,000 within 0.3 s and
100 MB; read commands within 0.15 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CONTRACTORS = 200
PAGE = 200
BLOCK = 10_000  # the largest syncs also report each block of this many messages
PER_MONTH = 2500
OWNER = "owner@example.com"
START = datetime(2019, 1, 1, tzinfo=UTC)
WORDS = ["please", "find", "the", "revised", "draft", "attached", "and", "let", "me", "know",
         "what", "you", "think", "about", "the", "colours", "the", "layout", "and", "the",
         "copy", "on", "the", "second", "page", "before", "friday"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def when_of(shape: str, i: int, total: int) -> datetime:
    if shape == "month":  # all of them in March 2026, in order
        return datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=i * (30 * 86400 / total))
    return START + timedelta(seconds=i * (30 * 86400 / PER_MONTH))


def records(shape: str, first: int, count: int, total: int, *, tag: str = "m") -> Iterator[Any]:
    from agent.models import Attachment, Identity, Message

    owner = Identity("email", OWNER, name="Owner")
    for i in range(first, first + count):
        c = (i * 7919) % CONTRACTORS
        who = Identity("email", f"c{c}@example.com", name=f"Contractor {c:03d}")
        when = when_of(shape, i, total)
        thread = f"<t{c}-{i // (CONTRACTORS * 5)}@example.com>"
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(60 + i % 40))
        if i % 5 == 0:
            yield Message(f"<{tag}{i}@example.com>", when, owner, subject=f"Task {c}-{i}",
                          text=words, thread_remote_id=thread, recipients=(who,),
                          direction="out")
            continue
        atts: tuple[Any, ...] = ()
        if i % 40 == 1:
            atts = (Attachment(f"work-{i}.pdf", "application/pdf",
                               data=b"%%PDF-1.4 deliverable %d\n" % (i % 300) * 20),)
        yield Message(f"<{tag}{i}@example.com>", when, who, subject=f"Re: Task {c}",
                      text=words, thread_remote_id=thread, recipients=(owner,),
                      attachments=atts)


def runqueue_s() -> float:
    """Time this thread spent runnable but waiting for a CPU (Linux schedstat; 0 elsewhere):
    on a shared box, the wall time other processes took from us."""
    try:
        with open("/proc/thread-self/schedstat") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def new_store(data: Path) -> Any:
    """A new store with the contractors in it (not timed)."""
    from agent.models import Identity
    from agent.store import Store

    store = Store(data)
    with store.writing():
        for c in range(CONTRACTORS):
            store.add_contractor(f"Contractor {c:03d}", [Identity("email", f"c{c}@example.com")])
    return store


def commit(store: Any, page: list[Any], first: int) -> None:
    """One page of a full sync as ``retainer sync`` stores it: the page, then the cursor."""
    with store.writing():
        store.commit_page("mail", "maildir", page, owner_keys=frozenset({f"email:{OWNER}"}))
        store.update_source_state("mail", cursor=str(first + len(page)),
                                  messages=first + len(page))


def child_fill(data: Path, shape: str, size: int) -> dict[str, Any]:
    synced = [0.0, 0]  # wall time inside os.fsync (files and folders), and how many
    real_fsync = os.fsync

    def timed_fsync(fd: Any) -> None:
        t = time.perf_counter()
        try:
            real_fsync(fd)
        finally:
            synced[0] += time.perf_counter() - t
            synced[1] += 1

    os.fsync = timed_fsync  # the wall time a shared disk adds, told apart from our own
    store = new_store(data)
    spent = cpu = kernel = 0.0  # kernel: the CPU time spent in system calls, part of cpu
    blocks: list[tuple[float, float, float, float]] = []  # (wall, CPU, fsync, CPU in
    # system calls) per 10,000 messages
    synced[:] = [0.0, 0]
    waited = 0.0
    started = time.perf_counter()
    for first in range(0, size, PAGE):
        page = list(records(shape, first, min(PAGE, size - first), size))
        t0, c0, q0, k0 = time.perf_counter(), time.process_time(), runqueue_s(), os.times()
        commit(store, page, first)
        spent += time.perf_counter() - t0
        cpu += time.process_time() - c0
        kernel += os.times().system - k0.system
        waited += runqueue_s() - q0
        if (first + len(page)) % BLOCK == 0:
            blocks.append((spent - sum(b[0] for b in blocks), cpu - sum(b[1] for b in blocks),
                           synced[0] - sum(b[2] for b in blocks),
                           kernel - sum(b[3] for b in blocks)))
    wall = time.perf_counter() - started
    os.fsync = real_fsync
    return {"kind": "full", "shape": shape, "size": size, "store_s": spent, "wall_s": wall,
            "per_msg_ms": spent / size * 1000, "cpu_ms": cpu / size * 1000,
            "sys_ms": kernel / size * 1000,
            "fsync_ms": synced[0] / size * 1000, "runq_ms": waited / size * 1000,
            "fsyncs_per_page": synced[1] / (size / PAGE),
            "blocks_ms": [tuple(x / BLOCK * 1000 for x in block) for block in blocks],
            "rss_mb": peak_rss_mb()}


def child_steps(data: Path, shape: str, size: int, cpu: int | None) -> dict[str, Any]:
    """A full sync of ``size`` messages into a new store, one page each time the parent
    writes a line to stdin; after each page, its store time (wall, CPU) as a line on
    stdout. The parent runs two of these in turns (:func:`lockstep`), both on one CPU."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    store = new_store(data)
    page = list(records(shape, 0, min(PAGE, size), size))
    print("ready", flush=True)
    for first in range(0, size, PAGE):
        if not sys.stdin.readline():
            raise SystemExit("the parent went away")
        t0, c0 = time.perf_counter(), time.process_time()
        commit(store, page, first)
        took = f"{time.perf_counter() - t0} {time.process_time() - c0}"
        # the next page is made before saying so: once the parent hears, the other
        # sync's turn begins, and this process must not take the CPU from it then
        nxt = first + PAGE
        page = list(records(shape, nxt, min(PAGE, size - nxt), size)) if nxt < size else []
        print(took, flush=True)
    return {"kind": "steps", "rss_mb": peak_rss_mb()}


class Stepper:
    """One :func:`child_steps` process: ``step()`` stores its next page and returns the
    page's store time (wall, CPU)."""

    def __init__(self, data: Path, shape: str, size: int, cpu: int | None) -> None:
        if data.parent.exists():
            shutil.rmtree(data.parent)
        data.parent.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", "steps", str(data), shape, str(size),
             "" if cpu is None else str(cpu)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pages = -(-size // PAGE)
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            raise SystemExit(f"a benchmark child failed ({self.proc.wait()})")
        return line

    def step(self) -> tuple[float, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        wall, cpu = self._line().split()
        self.pages -= 1
        return float(wall), float(cpu)

    def finish(self) -> float:
        """The process's peak RSS in MB."""
        doc = json.loads(self._line())
        self.proc.wait()
        return float(doc["rss_mb"])


def lockstep(work: Path, shape: str, small: int, large: int, turn: int = 1
             ) -> dict[str, Any]:
    """A full sync of ``large`` messages and, beside it, one full sync of ``small``
    messages after another (each a new store in a new process), in turns of ``turn``
    pages: a turn of the large, a turn of a small, and so on. A shared box's speed drifts
    from one second to the next; pages that ran a fraction of a second apart met the same
    box, so the ratio of their times is the store's own. Both run on one CPU (the
    scheduler would otherwise keep each on its own, and a virtual machine's CPUs are not
    equally busy). Returns the ms per message of both and their ratio, over the whole
    sync and per block of ``small`` messages."""
    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    big = Stepper(work / f"{shape}-{large}" / "data", shape, large, cpu)
    times: dict[str, list[tuple[float, float]]] = {"small": [], "large": []}
    rss = {"small": 0.0, "large": 0.0}
    blocks: list[tuple[float, float]] = []  # per block: (large ms/msg, small ms/msg), wall
    done = 0
    pages = -(-small // PAGE)  # of each small sync, and of the large one per block
    while big.pages:
        little = Stepper(work / f"{shape}-{small}-lockstep" / "data", shape, small, cpu)
        start = len(times["large"])
        while little.pages:  # once the large sync has ended, the small one ends alone
            ahead = len(times["large"]) - start
            times["large"] += [big.step() for _ in range(min(turn, big.pages, pages - ahead))]
            times["small"] += [little.step() for _ in range(min(turn, little.pages))]
        rss["small"] = max(rss["small"], little.finish())
        count = min((len(times["large"]) - start) * PAGE, large - done)
        blocks.append((sum(w for w, _ in times["large"][start:]) / count * 1000,
                       sum(w for w, _ in times["small"][-pages:]) / small * 1000))
        done += count
    rss["large"] = big.finish()
    shutil.rmtree(work / f"{shape}-{small}-lockstep")
    counts = {"large": large, "small": small * len(blocks)}
    per = {k: (sum(w for w, _ in v) / counts[k] * 1000, sum(c for _, c in v) / counts[k] * 1000)
           for k, v in times.items()}
    return {"kind": "lockstep", "shape": shape, "small": small, "large": large, "turn": turn,
            "small_ms": per["small"][0], "small_cpu_ms": per["small"][1],
            "large_ms": per["large"][0], "large_cpu_ms": per["large"][1],
            "ratio": per["large"][0] / per["small"][0],
            "cpu_ratio": per["large"][1] / per["small"][1],
            "block_ratios": [lg / sm for lg, sm in blocks],
            "rss_mb": rss}


def child_add(data: Path, shape: str, size: int, run: int) -> dict[str, Any]:
    started = time.perf_counter()
    from agent.store import Store

    imported = time.perf_counter()
    page = list(records(shape, size + run * 100, 100, size, tag=f"new{run}-{os.getpid()}-"))
    t0 = time.perf_counter()  # the sync's store work: open the store, store the page, cursor
    c0 = time.process_time()
    store = Store(data)
    with store.writing():
        result = store.commit_page("mail", "maildir", page,
                                   owner_keys=frozenset({f"email:{OWNER}"}))
        store.update_source_state("mail", cursor=str(size + (run + 1) * 100))
    done = time.perf_counter()
    cpu = time.process_time() - c0
    assert result.messages_new == 100, result
    return {"kind": "add", "shape": shape, "size": size, "sync_s": done - t0, "cpu_s": cpu,
            "import_s": imported - started, "rss_mb": peak_rss_mb()}


def write_new_mail(maildir: Path, first: int, count: int, *, tag: str = "") -> None:
    """``count`` new messages from the contractors into a Maildir's ``new/``, one in ten
    with a 2 KB PDF (a deliverable)."""
    from email.message import EmailMessage
    from email.utils import formatdate

    for folder in ("cur", "new", "tmp"):
        (maildir / folder).mkdir(parents=True, exist_ok=True)
    now = time.time()
    for i in range(first, first + count):
        msg = EmailMessage()
        c = i % CONTRACTORS
        msg["From"] = f"Contractor {c:03d} <c{c}@example.com>"
        msg["To"] = OWNER
        msg["Subject"] = f"progress {i}"
        msg["Date"] = formatdate(now - 3600 + i)
        msg["Message-ID"] = f"<real-sync-{tag}{i}@example.com>"
        msg.set_content(f"Here is where the work stands, step {i}. " * 20)
        if i % 10 == 0:
            msg.add_attachment(os.urandom(2048), maintype="application", subtype="pdf",
                               filename=f"draft-{i}.pdf")
        (maildir / "new" / f"{int(now)}.{tag}{i}.bench:2,").write_bytes(bytes(msg))


def real_syncs(data: Path, runs: int) -> dict[str, Any]:
    """``retainer sync`` of 100 new messages from a Maildir into the store, as a user runs
    it: a fresh process with the builtin plugins, after ``report`` and ``review`` have put
    their read models in use (so the sync refreshes them). The first sync of the new
    source is not counted; then ``runs`` syncs of 100 new messages each."""
    maildir = data.parent / "maildir-new"
    shutil.rmtree(maildir, ignore_errors=True)
    config = data.parent / "sync.toml"
    config.write_text(f'[agent]\ndata_dir = "{data}"\nowner_emails = ["{OWNER}"]\n\n'
                      f'[[sources]]\nname = "inbox"\nplatform = "maildir"\n'
                      f'[sources.settings]\npath = "{maildir}"\n')
    env = {"PATH": "/usr/bin:/bin", "HOME": str(data.parent)}
    base = [sys.executable, "-m", "agent", "--config", str(config)]
    for argv in (["report", "--json"], ["review"]):
        timed_process([*base, *argv], env)
    rows = []
    tag = f"{int(time.time())}-"  # new ids even in a store an earlier run synced
    for run in range(runs + 1):
        write_new_mail(maildir, run * 100, 100, tag=tag)
        started = time.perf_counter()
        proc = subprocess.Popen([*base, "sync", "--json"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        out = proc.stdout.read() if proc.stdout else b""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"retainer sync failed: {err}")
        result = json.loads(out)[0]
        assert result["messages_new"] == 100, result
        # the first listing after the sync brings the recent-messages model up to date
        first_read, first_read_mb = timed_process(
            [*base, "messages", "--limit", "20", "--json"], env)
        if run:
            rows.append({"reported_s": result["duration"], "wall_s": wall,
                         "cpu_s": usage.ru_utime + usage.ru_stime,
                         "rss_mb": usage.ru_maxrss / 1024, "first_read_s": first_read,
                         "first_read_mb": first_read_mb})
    return {"kind": "real", "runs": runs,
            **{k: statistics.median(r[k] for r in rows)
               for k in ("reported_s", "wall_s", "cpu_s", "first_read_s")},
            "rss_mb": max(r["rss_mb"] for r in rows),
            "first_read_mb": max(r["first_read_mb"] for r in rows)}


INNER = ("status", "deliverables --unreviewed", "messages --limit 20",
         "messages --contractor --limit 20", "contractors")


def child_read(data: Path, op: str) -> dict[str, Any]:
    """The store's part of one read command, timed after the imports (fresh process),
    through what the command uses (read models where it has them)."""
    from itertools import islice

    from agent.stats import roster_rows
    from agent.store import Store

    t0, c0 = time.perf_counter(), time.process_time()
    store = Store(data, create=False)
    if op == "status":
        assert store.source_states() and store.counts()
    elif op == "deliverables --unreviewed":  # as `--json` reads it
        from agent.cli.output import json_bytes
        from agent.reviewqueue import queue_json

        assert len(queue_json(store, json_bytes)) > 2
    elif op == "messages --limit 20":  # the read model of the newest, else the shards
        found = store.newest_messages(20)
        if found is None:
            found = list(islice(store.iter_messages_newest_first(), 20))
        assert len(found) == 20
    elif op == "messages --contractor --limit 20":
        found = store.newest_messages(20, contractor="c7@example.com")
        if found is None:
            found = list(islice(store.iter_messages_newest_first(contractor="c7@example.com"),
                                20))
        assert len(found) == 20
    else:
        assert roster_rows(store)
    return {"kind": "inner", "command": op, "s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0, "rss_mb": peak_rss_mb()}


def to_month_layout(data: Path) -> None:
    """Rewrite a store as schema 1 kept it (one file per month), to time the upgrade."""
    root = data / "store"
    for folder, table, when in (("messages", "messages", "sent_at"),
                                ("deliverables", "deliverables", "received_at")):
        months: dict[str, dict[str, dict[str, Any]]] = {}
        for path in sorted((root / folder).glob("s*.json")):
            tables = json.loads(path.read_bytes())
            for doc in tables.get(table, {}).values():
                month = months.setdefault(doc[when][:7], {table: {}, "threads": {}})
                month[table][str(len(month[table]) + 1)] = doc
            for entry in tables.get("threads", {}).values():
                month = months.setdefault(entry["first_at"][:7], {table: {}, "threads": {}})
                month["threads"][str(len(month["threads"]) + 1)] = entry
            path.unlink()
        for name, kept in months.items():
            (root / folder / f"{name}.json").write_bytes(json.dumps(kept).encode())
    shutil.rmtree(root / "index")
    meta = json.loads((root / "meta.json").read_bytes())
    for doc in meta["meta"].values():
        doc["version"] = 1
    (root / "meta.json").write_bytes(json.dumps(meta).encode())


def child_upgrade(data: Path) -> dict[str, Any]:
    from agent.store import Store

    t0 = time.perf_counter()
    store = Store(data)
    spent = time.perf_counter() - t0
    count = sum(len(store.catalog("messages").shard_ids(n)) for n in store.month_names())
    return {"kind": "upgrade", "s": spent, "messages": count, "rss_mb": peak_rss_mb()}


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True,
                         capture_output=True, text=True)
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


def paired_ratios(order: list[dict[str, Any]], small: int, large: int) -> dict[str, Any]:
    """Each sync of ``large`` messages against the syncs of ``small`` right before and
    after it (the sizes take turns): ms per message and CPU ms, large over the mean of
    its neighbours, and the medians of those ratios. A shared box's speed drifts over
    minutes; neighbours in time ran on the same box, so their ratio is the store's own."""
    wall, cpu = [], []
    for at, run in enumerate(order):
        if run["size"] != large:
            continue
        near = [r for r in (order[at - 1] if at else None,
                            order[at + 1] if at + 1 < len(order) else None)
                if r is not None and r["size"] == small]
        if near:
            wall.append(run["per_msg_ms"] / statistics.mean(r["per_msg_ms"] for r in near))
            cpu.append(run["cpu_ms"] / statistics.mean(r["cpu_ms"] for r in near))
    return {"small": small, "large": large, "wall": wall, "cpu": cpu,
            "wall_median": statistics.median(wall) if wall else None,
            "cpu_median": statistics.median(cpu) if cpu else None}


LAST_CPU = [0.0]


def timed_process(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of one fresh process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    LAST_CPU[0] = usage.ru_utime + usage.ru_stime
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(argv)} failed: {err}")
    return wall, usage.ru_maxrss / 1024


class Tree:
    """Whose code the read commands run: ``python`` with ``pythonpath`` first on its path
    (None: what the interpreter has installed), on the store under ``work``."""

    def __init__(self, label: str, python: str, pythonpath: Path | None, work: Path) -> None:
        self.label, self.python, self.pythonpath, self.work = label, python, pythonpath, work

    def env(self) -> dict[str, str]:
        """A user's plain environment: no PYTHONDONTWRITEBYTECODE (a session that sets it
        makes every run compile every module: 8x the instructions of importing the
        command line), no COLUMNS, nothing of the caller's venv; bytecode of another
        checkout goes to a cache folder of its own, not into that checkout."""
        env = {"RETAINER_LOAD_PLUGINS": "", "PATH": "/usr/bin:/bin", "HOME": str(self.work)}
        if self.pythonpath is not None:
            env["PYTHONPATH"] = str(self.pythonpath)
            if self.pythonpath != ROOT:
                env["PYTHONPYCACHEPREFIX"] = str(self.work / "pycache")
        return env


ROOT = Path(__file__).resolve().parents[2]
READS = [
    ("status --json", ["status", "--json"]),
    ("deliverables --unreviewed --json", ["deliverables", "--unreviewed", "--json"]),
    ("messages --limit 20 --json", ["messages", "--limit", "20", "--json"]),
    ("messages --contractor --limit 20", ["messages", "--contractor", "c7@example.com",
                                          "--limit", "20", "--json"]),
    ("contractors --json", ["contractors", "--json"]),
]


def read_commands(trees: list[Tree], shape: str, size: int, runs: int
                  ) -> list[dict[str, Any]]:
    """Each read command as a fresh process of each tree, in interleaved rounds (a burst
    of load on a shared box hits every command and tree alike), from a neutral folder
    (the current one must not decide which code runs); medians of ``runs``."""
    commands: list[tuple[str, Tree, list[str]]] = []
    for tree in trees:
        data = tree.work / f"{shape}-{size}" / "data"
        config = data.parent / "bench.toml"
        config.write_text(f'[agent]\ndata_dir = "{data}"\nowner_emails = ["{OWNER}"]\n')
        base = [tree.python, "-m", "agent", "--config", str(config)]
        commands += [("python -c pass", tree, [tree.python, "-c", "pass"]),
                     ("import agent.cli", tree, [tree.python, "-c", "import agent.cli"])]
        commands += [(label, tree, [*base, *argv]) for label, argv in READS]
    for _, tree, argv in commands:  # warm the page cache (and read models) once
        timed_process(argv, tree.env())
    samples: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for _ in range(runs):
        for label, tree, argv in commands:
            wall, rss = timed_process(argv, tree.env())
            samples.setdefault((label, tree.label), []).append((wall, LAST_CPU[0], rss))
    rows = []
    for (label, tree_label), got in samples.items():
        rows.append({"kind": "read", "command": label, "tree": tree_label,
                     "median_s": statistics.median(g[0] for g in got),
                     "best_s": min(g[0] for g in got),
                     "cpu_s": statistics.median(g[1] for g in got),
                     "rss_mb": max(g[2] for g in got)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def installed_python(venv: Path) -> str:
    """A venv with this checkout installed as a user installs it (``pip install .``: no
    editable finder at startup, bytecode compiled by pip), made by ``install_venv.sh``."""
    subprocess.run(["bash", str(ROOT / "tests" / "benchmarks" / "install_venv.sh"), str(venv),
                    str(ROOT)], check=True)
    return str(venv / "bin" / "python")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--shapes", default="month,spread")
    parser.add_argument("--work", type=Path, help="where the stores go (default: a temp dir)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-fill", action="store_true",
                        help="reuse the largest stores already in --work: only the new "
                             "messages and the read commands")
    parser.add_argument("--fill-only", action="store_true",
                        help="only the full syncs (no new messages, read commands or "
                             "retainer sync afterwards)")
    parser.add_argument("--lockstep", type=int, default=2, metavar="N",
                        help="then N syncs of the largest size, each page by page in turns "
                             "with syncs of the smallest (default 2; 0: none)")
    parser.add_argument("--turn", type=int, default=1, metavar="PAGES",
                        help="pages each sync in lockstep stores in its turn (default 1)")
    parser.add_argument("--upgrade", type=int, default=0, metavar="N",
                        help="only time the upgrade of a month-layout store of N messages")
    parser.add_argument("--repeat", type=int, default=3,
                        help="full syncs per size (one fewer above 50,000); medians")
    parser.add_argument("--reads-only", action="store_true",
                        help="only the read commands, on the largest stores already in --work")
    parser.add_argument("--installed", action="store_true",
                        help="run the read commands with Retainer installed in a venv of "
                             "its own (WORK/venv, pip install ., as a user has it) instead "
                             "of this interpreter's (an editable install adds its finder "
                             "to every start)")
    parser.add_argument("--baseline", type=Path,
                        help="another checkout (e.g. main) whose read commands are timed "
                             "in the same rounds, on the stores of --baseline-work")
    parser.add_argument("--baseline-work", type=Path,
                        help="the baseline's copies of the stores (read models of two "
                             "versions would replace each other's in one store)")
    args = parser.parse_args()
    if args.child:
        kind, data, shape, size, *rest = args.child
        if kind == "fill":
            doc = child_fill(Path(data), shape, int(size))
        elif kind == "steps":
            doc = child_steps(Path(data), shape, int(size), int(rest[0]) if rest[0] else None)
        elif kind == "upgrade":
            doc = child_upgrade(Path(data))
        elif kind == "read":
            doc = child_read(Path(data), shape)
        else:
            doc = child_add(Path(data), shape, int(size), int(rest[0]))
        print(json.dumps(doc))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="retainer-scale-"))
    if args.upgrade:
        data = work / f"upgrade-{args.upgrade}" / "data"
        shutil.rmtree(data.parent, ignore_errors=True)
        data.parent.mkdir(parents=True)
        run_child("fill", str(data), "spread", str(args.upgrade))
        to_month_layout(data)
        months = len(list((data / "store" / "messages").glob("*.json")))
        doc = run_child("upgrade", str(data), "-", "0")
        print(f"upgraded {doc['messages']} messages from {months} month files in "
              f"{doc['s']:.1f} s, peak {doc['rss_mb']:.0f} MB")
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    results: list[dict[str, Any]] = []
    python = installed_python(work / "venv") if args.installed else sys.executable
    trees = [Tree("this", python, None if args.installed else ROOT, work)]
    if args.baseline:
        trees.append(Tree("baseline", python, args.baseline.resolve(),
                          args.baseline_work or work))
    if args.reads_only:
        args.no_fill = True
    for shape in args.shapes.split(","):
        # the sizes take turns (10k, 200k, 10k, 200k, 10k), so a shared box's load
        # changing during the run weighs on every size alike
        by_size: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
        turns = [(rep, size) for rep in range(args.repeat) for size in sizes
                 if rep < (args.repeat if size <= 50_000 else max(1, args.repeat - 1))]
        order: list[dict[str, Any]] = []  # every full sync in the order it ran
        for _rep, size in [] if args.no_fill else turns:
            data = work / f"{shape}-{size}" / "data"
            if data.exists():
                shutil.rmtree(data)
            data.parent.mkdir(parents=True, exist_ok=True)
            by_size[size].append(run_child("fill", str(data), shape, str(size)))
            order.append(by_size[size][-1])
            print(json.dumps(by_size[size][-1]), flush=True)
        if len(sizes) > 1 and order:
            results.append({"kind": "paired", "shape": shape,
                            **paired_ratios(order, sizes[0], sizes[-1])})
        for _ in range(0 if args.no_fill or len(sizes) < 2 else args.lockstep):
            results.append(lockstep(work, shape, sizes[0], sizes[-1], args.turn))
            print(json.dumps(results[-1]), flush=True)
        for size in [] if args.no_fill else sizes:
            runs = by_size[size]
            if not runs:  # --repeat 0: only the syncs in lockstep
                continue
            results.append({"kind": "full", "shape": shape, "size": size, "runs": len(runs),
                            "blocks_ms": runs[-1]["blocks_ms"],
                            **{k: statistics.median(r[k] for r in runs)
                               for k in ("store_s", "per_msg_ms", "cpu_ms", "fsync_ms",
                                         "runq_ms", "fsyncs_per_page", "sys_ms")},
                            "own_ms": statistics.median(r["per_msg_ms"] - r["runq_ms"]
                                                        for r in runs),
                            "rss_mb": max(r["rss_mb"] for r in runs)})
            if size != sizes[-1]:
                shutil.rmtree(work / f"{shape}-{size}")
        if args.fill_only:
            continue
        big = work / f"{shape}-{sizes[-1]}" / "data"
        first = 10 if args.no_fill else 0  # new messages, not those of an earlier run
        adds = [] if args.reads_only else [
            run_child("add", str(big), shape, str(sizes[-1]), str(r))
            for r in range(first, first + 3)]
        if adds:
            add = {"kind": "add", "shape": shape, "size": sizes[-1],
                   "sync_s": statistics.median(a["sync_s"] for a in adds),
                   "cpu_s": statistics.median(a["cpu_s"] for a in adds),
                   "import_s": statistics.median(a["import_s"] for a in adds),
                   "rss_mb": max(a["rss_mb"] for a in adds)}
            results.append(add)
            print(json.dumps(add), flush=True)
        for row in read_commands(trees, shape, sizes[-1], args.runs):
            results.append(dict(row, shape=shape, size=sizes[-1]))
        for op in INNER:
            inner = [run_child("read", str(big), op, "0") for _ in range(args.runs)]
            results.append({"kind": "inner", "shape": shape, "command": op,
                            "median_s": statistics.median(r["s"] for r in inner),
                            "cpu_s": statistics.median(r["cpu_s"] for r in inner),
                            "rss_mb": max(r["rss_mb"] for r in inner)})
            print(json.dumps(results[-1]), flush=True)
        if not args.reads_only:
            real = real_syncs(big, args.repeat)
            results.append(dict(real, shape=shape, size=sizes[-1]))
            print(json.dumps(results[-1]), flush=True)
    print(f"\nfull syncs (store time: commit_page + cursor, pages of {PAGE}; medians)")
    print("(of it sys: the CPU time in system calls; in fsync: wall time inside os.fsync, the "
          "shared disk's part; runq: waiting for a CPU other processes held; own: wall minus "
          "runq)")
    print(f"{'shape':<8}{'messages':>10}{'runs':>5}{'store s':>9}{'ms/msg':>8}{'vs first':>9}"
          f"{'cpu ms/msg':>11}{'vs first':>9}{'of it sys':>10}{'in fsync':>9}{'runq':>7}"
          f"{'own':>7}{'vs first':>9}"
          f"{'fsync/page':>11}{'peak MB':>8}")
    for shape in args.shapes.split(","):
        full = [r for r in results if r["kind"] == "full" and r["shape"] == shape]
        for r in full:
            print(f"{shape:<8}{r['size']:>10}{r['runs']:>5}{r['store_s']:>9.1f}"
                  f"{r['per_msg_ms']:>8.3f}{r['per_msg_ms'] / full[0]['per_msg_ms']:>8.2f}x"
                  f"{r['cpu_ms']:>11.3f}{r['cpu_ms'] / full[0]['cpu_ms']:>8.2f}x"
                  f"{r['sys_ms']:>10.3f}"
                  f"{r['fsync_ms']:>9.3f}{r['runq_ms']:>7.3f}{r['own_ms']:>7.3f}"
                  f"{r['own_ms'] / full[0]['own_ms']:>8.2f}x{r['fsyncs_per_page']:>11.1f}"
                  f"{r['rss_mb']:>8.0f}")
    for r in (r for r in results if r["kind"] == "paired" and r["wall"]):
        print(f"{r['shape']:<8}each {r['large']} sync against the {r['small']} syncs beside it"
              f" in time: wall {' '.join(f'{x:.2f}x' for x in r['wall'])} (median "
              f"{r['wall_median']:.2f}x), CPU {' '.join(f'{x:.2f}x' for x in r['cpu'])} "
              f"(median {r['cpu_median']:.2f}x)")
    print("\nin lockstep: the largest sync and syncs of the smallest in turns of --turn "
          "pages, on one CPU (wall ms per message, CPU ms per message; largest over "
          "smallest; per block: the block's ratio, the first block's about 1.00)")
    for r in (r for r in results if r["kind"] == "lockstep"):
        print(f"{r['shape']:<8}{r['large']}: {r['large_ms']:.3f} / {r['large_cpu_ms']:.3f}  "
              f"{r['small']}: {r['small_ms']:.3f} / {r['small_cpu_ms']:.3f}  ratio "
              f"{r['ratio']:.2f}x (CPU {r['cpu_ratio']:.2f}x); per block of {r['small']}: "
              + " ".join(f"{x:.2f}" for x in r["block_ratios"])
              + f"; peak {r['rss_mb']['large']:.0f} MB / {r['rss_mb']['small']:.0f} MB")
    print(f"\nwithin the largest sync: ms per message of its first, median and last block of "
          f"{BLOCK} (wall / CPU / in fsync)")
    for r in (r for r in results if r["kind"] == "full" and r.get("blocks_ms")
              and r["size"] == sizes[-1]):
        blocks = r["blocks_ms"]
        mid = tuple(statistics.median(b[k] for b in blocks) for k in range(4))
        print(f"{r['shape']:<8}" + "  ".join(f"{w:.3f} / {c:.3f} / {f:.3f}"
                                             for w, c, f, _ in (blocks[0], mid, blocks[-1])))
        print(f"{'':<8}CPU in system calls per block: " + " ".join(
            f"{b[3]:.3f}" for b in blocks))
    print("\n100 new messages into the largest store (fresh process; median of 3)")
    for r in (r for r in results if r["kind"] == "add"):
        print(f"{r['shape']:<8}{r['size']:>10}  sync {r['sync_s']:.3f} s (CPU {r['cpu_s']:.3f} s;"
              f" + imports {r['import_s']:.3f} s), peak {r['rss_mb']:.0f} MB")
    print("\nretainer sync of 100 new messages from a Maildir into the largest store (fresh "
          "process, read models in use; median of --repeat after the source's first sync)")
    for r in (r for r in results if r["kind"] == "real"):
        print(f"{r['shape']:<8}{r['size']:>10}  reported {r['reported_s']:.3f} s, process "
              f"{r['wall_s']:.3f} s (CPU {r['cpu_s']:.3f} s), peak {r['rss_mb']:.0f} MB; "
              f"then messages --limit 20: {r['first_read_s']:.3f} s, "
              f"{r['first_read_mb']:.0f} MB")
    print(f"\nread commands on the largest store (fresh process, {trees[0].python}; median of "
          f"{args.runs} interleaved rounds: wall, best wall, CPU, peak RSS"
          + ("; then the baseline's and the ratio of the medians)" if args.baseline else ")"))
    reads = [r for r in results if r["kind"] == "read"]
    for r in (r for r in reads if r["tree"] == "this"):
        line = (f"{r['shape']:<8}{r['command']:<36}{r['median_s']:>8.3f} s{r['best_s']:>7.3f} s"
                f"{r['cpu_s']:>7.3f} s{r['rss_mb']:>5.0f} MB")
        base = next((b for b in reads if b["tree"] == "baseline" and b["shape"] == r["shape"]
                     and b["command"] == r["command"]), None)
        if base is not None:
            line += (f"   baseline {base['median_s']:.3f} s (CPU {base['cpu_s']:.3f} s)"
                     f"{r['median_s'] / base['median_s']:>7.2f}x")
        print(line)
    print("\nthe store's part of each (in a fresh process, after imports; median wall, CPU)")
    for r in (r for r in results if r["kind"] == "inner"):
        print(f"{r['shape']:<8}{r['command']:<36}{r['median_s']:>8.3f} s{r['cpu_s']:>8.3f} s"
              f"{r['rss_mb']:>7.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
