"""Time ``retainer deliverables --unreviewed --json`` (and ``messages --json``) on a big store.

    /usr/bin/python3 tests/benchmarks/deliverables_bench.py [--dir DIR] [--runs 5]

Syncs the benchmark server's INBOX (``/work/shared/bench/imap/server.sh``, populated
with ``populate.py N``) into a Retainer store in DIR (default
/tmp/imapbench/deliverables-client) once, with the benchmark's contractors seeded, then
runs each listing RUNS times under ``/usr/bin/time -v`` and prints the median wall time
and the peak RSS. Targets: ``deliverables --unreviewed --json`` under 0.5 s, every
process under 150 MB, at 50,000 messages.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = Path(os.environ.get("BENCH_DIR", "/work/shared/bench/imap"))


def server_env() -> dict[str, str]:
    out = subprocess.run([str(BENCH / "server.sh"), "env"], capture_output=True, text=True,
                         check=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    env.update(IMAP_TLS="0", BENCH_DIR=str(BENCH))
    return env


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, output bytes) of one run."""
    done = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, env=env, check=False)
    report = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        sys.exit(f"failed: {shlex.join(argv)}\n{report[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", report)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
    assert wall and rss
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return seconds, int(rss.group(1)) / 1024, len(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/imapbench/deliverables-client"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--venv", default=os.environ.get("RETAINER_BENCH_VENV",
                                                         "/tmp/imapbench/retainer-venv"))
    args = parser.parse_args()
    subprocess.run([str(HERE / "install_venv.sh"), args.venv], check=True)
    env = {**os.environ, **server_env()}
    retainer = [f"{args.venv}/bin/retainer", "--config", str(args.dir / "retainer.toml")]
    if not (args.dir / "retainer.toml").exists():
        subprocess.run([f"{args.venv}/bin/python", str(HERE / "make_config.py"), str(args.dir)],
                       check=True, env=env)
    wall, rss, _ = timed([*retainer, "-q", "sync"], env)
    count = subprocess.run([f"{args.venv}/bin/python", str(HERE / "count_messages.py"),
                            str(args.dir / "data")], capture_output=True, text=True, env=env,
                           check=True).stdout.strip()
    print(f"sync: {wall:.2f} s, peak RSS {rss:.0f} MB; the store holds {count} messages")
    for listing in (["deliverables", "--unreviewed", "--json"], ["deliverables", "--json"],
                    ["messages", "--json"], ["status", "--json"]):
        runs = [timed([*retainer, *listing], env) for _ in range(args.runs)]
        walls = [r[0] for r in runs]
        print(f"{' '.join(listing):32} median {statistics.median(walls):.3f} s "
              f"(min {min(walls):.3f}, max {max(walls):.3f}), peak RSS {max(r[1] for r in runs):.0f} MB, "
              f"output {runs[0][2] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
