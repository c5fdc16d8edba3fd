"""Benchmark: `retainer contractors`, `review` and `report --json` on a big store.

500 contractors, 50,000 messages (a fifth of them the owner's) and 10,000 deliverables,
written through the real write path (:meth:`Store.commit_page`, page by page), and a
review on half of the deliverables. Each command runs in-process through the real command
line (click), and once more as a fresh ``python -m agent`` process for the wall time a user
sees. Prints a table of medians; exits 1 when an in-process median is over the budget.

    python tests/benchmarks/workflow_bench.py [--data DIR] [--runs 5] [--budget 0.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from agent.cli import App, build_cli
from agent.models import Attachment, Contract, Identity, Message
from agent.plugins import make_plugin_host
from agent.store import Store
from agent.store import workflow as wf

CONTRACTORS = 500
MESSAGES = 50_000
DELIVERABLES = 10_000
OWNER = Identity("email", "owner@example.com", name="Owner")


def fill(data: Path) -> None:
    store = Store(data)
    now = datetime.now(UTC)
    per = MESSAGES // CONTRACTORS  # 100 messages per contractor
    files_per = DELIVERABLES // CONTRACTORS  # 20 of them carry a deliverable
    blob = b"%PDF-1.4 benchmark deliverable\n" * 30
    started = time.perf_counter()
    with store.writing():  # the roster first: files from contractors become deliverables
        for c in range(CONTRACTORS):
            store.add_contractor(f"Contractor {c:03d}", [Identity("upwork", f"u{c}"),
                                                        Identity("email", f"c{c}@example.com")],
                                 skills=["design", "logo"] if c % 2 else ["copywriting"],
                                 rate=None if c % 3 else 25.0 + c % 40)
    records: list[Contract | Message] = []
    for c in range(CONTRACTORS):
        who = Identity("email", f"c{c}@example.com", name=f"Contractor {c:03d}")
        records.append(Contract(f"k{c}", Identity("upwork", f"u{c}", name=who.name),
                                title="Retainer", started_at=now - timedelta(days=400),
                                spent=float(100 + c)))
        for m in range(per):
            when = now - timedelta(hours=(c * 37 + m * 53) % (24 * 360), minutes=m)
            thread = f"<t{c}-{m // 5}@example.com>"
            if m % 5 == 0:  # the owner's brief opens each thread
                records.append(Message(f"<o{c}-{m}@example.com>", when - timedelta(hours=30),
                                       OWNER, subject=f"Task {m // 5}", text="Please do X",
                                       thread_remote_id=thread, recipients=(who,),
                                       direction="out"))
                continue
            atts: tuple[Attachment, ...] = ()
            if m % 5 == 1 and m // 5 < files_per:  # the first reply in each thread delivers
                atts = (Attachment(f"work-{c}-{m}.pdf", "application/pdf", data=blob),)
            records.append(Message(f"<i{c}-{m}@example.com>", when, who,
                                   subject=f"Re: Task {m // 5}", text="Here you go " * 20,
                                   thread_remote_id=thread, attachments=atts))
    # like the first sync of an old mailbox: oldest first, pages of 2,000
    records.sort(key=lambda r: getattr(r, "sent_at", None) or now - timedelta(days=400))
    with store.writing():
        for page in range(0, len(records), 2000):
            store.commit_page("mail", "maildir", records[page:page + 2000],
                              owner_keys=frozenset({OWNER.key}))
    fill_s = time.perf_counter() - started
    started = time.perf_counter()
    with store.writing():  # half the work reviewed (the same write path as `review approve`)
        items = []
        for n, doc in enumerate(store.deliverables()):
            if n % 2:
                continue
            received = datetime.fromisoformat(doc["received_at"].replace("Z", "+00:00"))
            items.append((doc, {"status": "approved" if n % 6 else "changes_requested",
                                "rating": 1 + n % 5, "cost": float(20 + n % 80),
                                "when": received + timedelta(hours=2 + n % 90)}))
        wf.record_reviews(store, items)
    print(f"filled in {fill_s:.1f} s, reviews in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)


def counts(data: Path) -> dict[str, int]:
    store = Store(data)
    return {"contractors": len(store.contractors()), "messages": sum(1 for _ in store.iter_messages()),
            "deliverables": len(store.deliverables())}


COMMANDS = [("contractors", ["contractors"]), ("contractors --json", ["contractors", "--json"]),
            ("review", ["review"]), ("review --json", ["review", "--json"]),
            ("report --json", ["report", "--json"])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="reuse (or build) the store here")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.5)
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="retainer-wf-bench-")) / "data"
    if not (data / "store" / "deliverables.json").exists():
        fill(data)
    found = counts(data)
    print(f"store: {found}", file=sys.stderr)
    config = data.parent / "bench.toml"
    config.write_text(f'[agent]\ndata_dir = "{data}"\nowner_emails = ["{OWNER.address}"]\n')
    rows = []
    failed = False
    for label, argv in COMMANDS:
        times = []
        for _ in range(args.runs):
            app = App(config, False, 0)
            app._host = make_plugin_host(entrypoints=False)
            group = build_cli(app)
            started = time.perf_counter()
            result = CliRunner().invoke(group, ["--config", str(config), *argv], obj=app)
            times.append(time.perf_counter() - started)
            assert result.exit_code == 0, result.output
            if "--json" in argv:
                json.loads(result.stdout)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "agent", "--config", str(config), *argv],
                       check=True, capture_output=True, env={"RETAINER_LOAD_PLUGINS": "",
                                                              "PATH": "/usr/bin:/bin"})
        process = time.perf_counter() - started
        med = statistics.median(times)
        ok = med < args.budget
        failed |= not ok
        rows.append((label, med, min(times), process, "ok" if ok else "OVER"))
    print(f"\n{'command':<22}{'median s':>10}{'min s':>10}{'process s':>12}  budget {args.budget} s")
    for label, med, low, process, verdict in rows:
        print(f"{label:<22}{med:>10.3f}{low:>10.3f}{process:>12.3f}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
