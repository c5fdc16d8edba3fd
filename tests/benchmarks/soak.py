"""Soak: the daemon with healthy and broken sources for a while; is anyone held up?

    .venv/bin/python tests/benchmarks/soak.py --minutes 10 [--every 5]

Starts, all on 127.0.0.1: a private Dovecot (tests/servers/dovecot.py), a Maildir, and the
Freelancer.com sandbox; then ``retainer -v run`` with five sources:

* healthy: ``imap`` (Dovecot), ``maildir``, ``market`` (the sandbox);
* ``imap-trickle``: the same Dovecot behind a loopback proxy that passes the greeting,
  then one byte every 2 s (never a socket timeout);
* ``market-hang``: the sandbox behind a proxy that accepts and never answers.

New mail arrives in Dovecot and the Maildir every few seconds. At the end it prints how
late the healthy sources' syncs started against their planned time (median, worst), the
daemon's RSS and open files at the start and the end, and how long it took to exit after
SIGTERM. Needs Dovecot and openssl installed (as the tests do).
"""

from __future__ import annotations

import argparse
import mailbox
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from plugins.freelancer.sandbox import start_sandbox  # noqa: E402
from tests.contract.tcpproxy import TcpProxy  # noqa: E402
from tests.servers.dovecot import PASSWORD_ENV, running_dovecot  # noqa: E402

HEALTHY = ("imap", "maildir", "market")
LATE = re.compile(r"DEBUG retainer\.daemon: (\S+): sync started (-?[\d.]+) s after")


def mail(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Maria Lopez <maria@example.com>"
    msg["To"] = "owner@example.com"
    msg["Subject"] = f"soak {n}"
    msg["Message-ID"] = f"<soak-{n}-{time.time_ns()}@example.com>"
    msg.set_content(f"message {n}\n" * 20)
    return bytes(msg)


def probe(pid: int) -> tuple[float, int]:
    """RSS in MB and open file descriptors of ``pid``."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def config_text(folder: Path, box_port: int, trickle_port: int, maildir: Path,
                market_url: str, hang_url: str, every: int, user: str) -> str:
    imap = (f'host = "127.0.0.1"\nsecurity = "none"\nusername = "{user}"\n'
            f'password = {{ env = "{PASSWORD_ENV}" }}\ntimeout = 10\n')
    market = 'token = { env = "SOAK_MARKET_TOKEN" }\ntimeout = 5\nmax_retries = 1\n'
    return f"""
[agent]
data_dir = "{folder / 'data'}"
owner_emails = ["owner@example.com"]
[[contractors]]
name = "Maria Lopez"
emails = ["maria@example.com"]
[[sources]]
name = "imap"
platform = "imap"
every = "{every}s"
[sources.settings]
{imap}port = {box_port}
[[sources]]
name = "imap-trickle"
platform = "imap"
every = "{every}s"
[sources.settings]
{imap}port = {trickle_port}
operation_deadline = 20
[[sources]]
name = "maildir"
platform = "maildir"
every = "{every}s"
[sources.settings]
path = "{maildir}"
[[sources]]
name = "market"
platform = "freelancer"
every = "{every}s"
[sources.settings]
{market}base_url = "{market_url}"
[[sources]]
name = "market-hang"
platform = "freelancer"
every = "{every}s"
[sources.settings]
{market}base_url = "{hang_url}"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run")
    parser.add_argument("--every", type=int, default=5, help="each source's interval, s")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="retainer-soak-"))
    maildir_path = folder / "Maildir"
    box = mailbox.Maildir(maildir_path, create=True)
    with running_dovecot() as server:
        user = server.add_user()
        user.append("INBOX", mail(0))
        market = start_sandbox(seed=3, threads=4, messages_per_thread=4)
        trickle = hang = None
        try:
            import socket

            with socket.create_connection((server.host, server.port), timeout=5) as sock:
                greeting = sock.makefile("rb").readline()
            trickle = TcpProxy((server.host, server.port), trickle_after=len(greeting) + 8,
                               trickle_every=2.0)
            host, port = market.base_url.split("//")[1].split(":")
            hang = TcpProxy((host, int(port)), hang=True)
            config = folder / "config.toml"
            config.write_text(config_text(folder, server.port, trickle.port, maildir_path,
                                          market.base_url, f"http://127.0.0.1:{hang.port}",
                                          args.every, user.user))
            env = dict(os.environ, **{PASSWORD_ENV: user.password,
                                      "SOAK_MARKET_TOKEN": market.token})
            log_path = folder / "daemon.log"
            retainer = Path(sys.executable).parent / "retainer"
            with log_path.open("w") as log:
                daemon = subprocess.Popen([str(retainer), "--config", str(config), "-v", "run"],
                                          env=env, stderr=log, stdout=log)
            stop = threading.Event()

            def deliver() -> None:
                n = 1
                while not stop.wait(3.0):
                    user.append("INBOX", mail(n))
                    box.add(mail(n))
                    n += 1

            feeder = threading.Thread(target=deliver, daemon=True)
            feeder.start()
            time.sleep(5)
            start_rss, start_fds = probe(daemon.pid)
            time.sleep(max(args.minutes * 60 - 5, 1))
            end_rss, end_fds = probe(daemon.pid)
            workers = subprocess.run(["pgrep", "-P", str(daemon.pid)], capture_output=True,
                                     text=True).stdout.split()
            stop.set()
            began = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(60)
            exit_s = time.monotonic() - began
        finally:
            for proxy in (trickle, hang):
                if proxy is not None:
                    proxy.cut()
            market.stop()
    text = log_path.read_text()
    late: dict[str, list[float]] = {}
    for name, seconds in LATE.findall(text):
        late.setdefault(name, []).append(max(float(seconds), 0.0))
    print(f"soak: {args.minutes:g} min, every source every {args.every} s; log {log_path}")
    for name in (*HEALTHY, "imap-trickle", "market-hang"):
        values = late.get(name, [])[1:]  # the first run is the start-up one, not planned
        if values:
            print(f"  {name:13} {len(values) + 1:4d} syncs started; late by median "
                  f"{statistics.median(values):.3f} s, worst {max(values):.3f} s")
        else:
            print(f"  {name:13} {len(late.get(name, [])):4d} syncs started")
    healthy = [v for n in HEALTHY for v in late.get(n, [])[1:]]
    if healthy:
        print(f"  healthy sources together: median {statistics.median(healthy):.3f} s, "
              f"worst {max(healthy):.3f} s late")
    print(f"  daemon RSS {start_rss:.1f} MB -> {end_rss:.1f} MB; open files {start_fds} -> "
          f"{end_fds}; {len(workers)} sync workers running at the end")
    print(f"  SIGTERM: exited with {code} after {exit_s:.2f} s")
    errors = sorted(set(re.findall(r"ERROR retainer\.\S+: (\S+?): (.{0,90})", text)))
    for name, message in errors[:8]:
        print(f"  error seen: {name}: {message}")


if __name__ == "__main__":
    main()
