"""Benchmark: the dashboard's server time per page on a big store, cold after a write.

The store of ``workflow_bench.py`` (500 contractors, 50,000 messages, 10,000 deliverables,
half of them reviewed), written through the real write path. Each page is requested through
the real Flask app (its guards included) with the access cookie; the time is the app's own
``Server-Timing`` figure (from the first guard to the rendered response), without the network.

Every page is measured *cold*: the first request right after a write, three kinds of it,
each through the same code as in real use:

* ``cli review``: another :class:`Store` (as ``retainer review approve`` in another process)
  records a review;
* ``sync``: another :class:`Store` (as the daemon) commits a page of 25 new messages from
  five contractors, one of them with a new deliverable, and the source's cursor;
* ``web review``: an approval posted to the dashboard itself.

and *warm*: the same page again with nothing written in between. Each figure is the median
of ``--runs`` rounds (each round writes once before every cold request). The dashboard is
opened once first (its read-ahead of the whole store is timed and printed, not budgeted).
Exits 1 when any median is over the budget.

    python -m tests.benchmarks.web_bench [--data DIR] [--runs 5] [--budget 0.15]
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.models import Attachment, Identity, Message
from agent.plugins import make_plugin_host
from agent.store import Store
from agent.store import workflow as wf
from agent.web import WebContext, create_app
from agent.web.security import cookie_name, csrf_for, load_or_create_token
from tests.benchmarks.workflow_bench import OWNER, counts, fill

WRITES = ("cli review", "sync", "web review")


def _ms(response: Any, what: str = "app") -> float:
    """The app's own figure from ``Server-Timing``: ``app`` (wall) or ``cpu`` (this
    thread's CPU time, which other processes on a busy machine disturb less)."""
    found = re.search(what + r";dur=([0-9.]+)", response.headers.get("Server-Timing", ""))
    assert found, response.headers
    return float(found.group(1))


class Writer:
    """The three kinds of write, each on a fresh unreviewed deliverable or new messages."""

    def __init__(self, data: Path, client: Any, token: str, base: dict[str, str]) -> None:
        self.other = Store(data)  # another process's store: the CLI's, the daemon's
        self.client = client
        self.token = token
        self.base = base
        self.waiting = [d["id"] for d in self.other.deliverables(unreviewed=True)]
        self.round = 0

    def next_id(self) -> str:
        return self.waiting.pop()

    def cli_review(self) -> None:
        with self.other.writing():
            wf.record_review(self.other, self.next_id(), "approved", rating=4)

    def sync(self) -> None:
        self.round += 1
        now = datetime.now(UTC)
        records = []
        for n in range(25):
            c = (self.round * 7 + n * 97) % 500
            who = Identity("email", f"c{c}@example.com", name=f"Contractor {c:03d}")
            atts = (Attachment(f"new-{self.round}.pdf", "application/pdf",
                               data=b"%%PDF-1.4 new work %d\n" % self.round),) if n == 0 else ()
            records.append(Message(f"<bench-{self.round}-{n}@example.com>",
                                   now - timedelta(seconds=25 - n), who,
                                   subject=f"Update {self.round}", text="Progress " * 30,
                                   thread_remote_id=f"<bench-{self.round}@example.com>",
                                   attachments=atts))
        with self.other.writing():
            self.other.commit_page("mail", "maildir", records, owner_keys=frozenset({OWNER.key}))
            self.other.update_source_state("mail", cursor={"round": self.round},
                                           last_sync=now.isoformat())

    def web_review(self) -> None:
        done = self.client.post(f"/queue/{self.next_id()}/review", data={
            "action": "approve", "rating": "4", "csrf": csrf_for(self.token)}, **self.base)
        assert done.status_code == 303, done.status_code

    def by_name(self) -> dict[str, Callable[[], None]]:
        return {"cli review": self.cli_review, "sync": self.sync, "web review": self.web_review}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="reuse (or build) the store here")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.15, help="seconds per page")
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="retainer-web-bench-")) / "data"
    marker = data.parent / ".filled"
    if not marker.exists():
        fill(data)
        marker.write_text("ok")
    print(f"store: {counts(data)}", file=sys.stderr)
    config = data.parent / "bench.toml"
    config.write_text(f'[agent]\ndata_dir = "{data}"\nowner_emails = ["{OWNER.address}"]\n')
    token = load_or_create_token(data)
    ctx = WebContext(config_path=config, data_dir=data, token=token,
                     host_factory=lambda: make_plugin_host(entrypoints=False), port=8765)
    started = time.perf_counter()
    app = create_app(ctx)
    access = app.extensions["retainer"][1]
    while access.warming:  # the read-ahead of the whole store when the dashboard opens
        time.sleep(0.01)
    opened = time.perf_counter() - started
    client = app.test_client()
    client.set_cookie(cookie_name(8765), token, domain="127.0.0.1")
    base = {"base_url": "http://127.0.0.1:8765"}
    store = Store(data)
    queue = store.deliverables(unreviewed=True)
    contractor = store.contractors()[250]["id"]
    template = "logo-brief"
    with store.writing():
        wf.save_template(store, template, "Hello {name},\n\nplease design {task}.\n",
                         skill="design")
    pages = [
        ("review queue", "/queue"), ("queue, page 40", "/queue?page=40"),
        ("queue, one contractor", f"/queue?contractor={contractor}"),
        ("queue, source+kind", "/queue?source=mail&kind=pdf"),
        ("queue, overdue", "/queue?overdue=1"),
        ("one deliverable", f"/queue/{queue[len(queue) // 2]['id']}"),
        ("roster", "/contractors"), ("roster, sorted", "/contractors?sort=spend&order=desc"),
        ("suggest", "/contractors?task=logo+design"),
        ("contractor", f"/contractors/{contractor}"),
        ("candidates", "/candidates"), ("report", "/report"),
        ("report, 30 days", "/report?since=30d"),
        ("report chart", "/report/scatter.svg"), ("sources", "/sources"),
        ("templates", "/templates"), ("one template", f"/templates/{template}"),
    ]
    writer = Writer(data, client, token, base)
    writes = writer.by_name()
    cold: dict[tuple[str, str], list[float]] = {}
    warm: dict[str, list[float]] = {}
    cold_cpu: dict[tuple[str, str], list[float]] = {}
    warm_cpu: dict[str, list[float]] = {}
    write_ms: dict[str, list[float]] = {}
    size: dict[str, int] = {}
    for path in (p for _, p in pages):  # every page seen once since the dashboard opened
        assert client.get(path, **base).status_code == 200, path
    for _ in range(args.runs):
        for label, path in pages:
            for kind in WRITES:
                began = time.perf_counter()
                writes[kind]()
                write_ms.setdefault(kind, []).append((time.perf_counter() - began) * 1000)
                response = client.get(path, **base)
                assert response.status_code == 200, (path, response.status_code,
                                                     response.get_data(as_text=True)[:300])
                cold.setdefault((label, kind), []).append(_ms(response))
                cold_cpu.setdefault((label, kind), []).append(_ms(response, "cpu"))
            response = client.get(path, **base)
            assert response.status_code == 200, path
            warm.setdefault(label, []).append(_ms(response))
            warm_cpu.setdefault(label, []).append(_ms(response, "cpu"))
            size[label] = len(response.data)
    budget = args.budget * 1000
    failed = False
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\ndashboard opened (whole store read ahead) in {opened * 1000:.0f} ms; peak RSS of "
          f"this process (dashboard, its read model, the writers) {rss:.0f} MB")
    print("writes (median ms): " + ", ".join(
        f"{k} {statistics.median(v):.0f}" for k, v in write_ms.items()))
    print(f"\nserver time (wall), median of {args.runs} (ms); budget {budget:.0f} ms for every "
          "wall column; then the same requests' CPU time")
    head = "".join(f"{'cold, ' + k:>17}" for k in WRITES)
    print(f"{'page':<22}{head}{'warm':>7}{'worst':>7}  |{'cpu cold (3)':>18}{'warm':>6}{'KB':>6}")
    for label, _ in pages:
        meds = [statistics.median(cold[(label, k)]) for k in WRITES]
        meds.append(statistics.median(warm[label]))
        worst = max(max(cold[(label, k)]) for k in WRITES)
        cpus = [statistics.median(cold_cpu[(label, k)]) for k in WRITES]
        over = any(m > budget for m in meds)
        failed |= over
        cells = "".join(f"{m:>17.1f}" for m in meds[:-1])
        cpu_cells = "/".join(f"{c:.0f}" for c in cpus)
        print(f"{label:<22}{cells}{meds[-1]:>7.1f}{worst:>7.0f}  |{cpu_cells:>18}"
              f"{statistics.median(warm_cpu[label]):>6.0f}{size[label] / 1024:>6.0f}"
              f"  {'OVER' if over else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
