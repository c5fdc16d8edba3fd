"""Fault cases of the daemon: hung sources, SIGTERM during a hang, no retry after a stop,
and a trickling IMAP server (real Dovecot behind a loopback proxy)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import plugins.imap
import tests.support.feed as feed
import tests.support.hang as hang
from agent.config import load_config
from agent.errors import TransientError
from agent.http import HttpClient
from agent.plugins import make_plugin_host
from agent.scheduler import Daemon
from agent.store import Store
from agent.sync import SyncEngine
from tests.contract.tcpproxy import TcpProxy
from tests.servers.dovecot import PASSWORD_ENV, Mailbox
from tests.test_http import Reply, Server
from tests.test_sync import make_config


def hang_config(tmp_path: Path, *, mode: str = "sleep") -> Path:
    path = make_config(tmp_path)
    text = path.read_text().replace('platform = "feed"', 'platform = "feed"\nevery = "1s"')
    text += f'\n[[sources]]\nname = "stuck"\nplatform = "hang"\nevery = "1s"\n' \
            f'[sources.settings]\nmode = "{mode}"\n'
    path.write_text(text)
    return path


def test_hung_source_is_stopped_at_its_deadline_and_others_keep_schedule(tmp_path):
    host = make_plugin_host(entrypoints=False, extra=[feed, hang])
    config = load_config(hang_config(tmp_path), host)
    daemon = Daemon(SyncEngine(config, host, Store(config.data_dir)))
    daemon.deadline_grace = 1.0
    thread = threading.Thread(target=daemon.run)
    thread.start()
    time.sleep(6)
    pid = daemon.workers["stuck"].process.pid if "stuck" in daemon.workers else None
    started = time.monotonic()
    daemon.stop()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 10
    assert daemon.runs["feed"] >= 4 and daemon.runs["other"] >= 4  # healthy: 1 s schedule
    state = daemon.engine.store.source_state("stuck")
    assert "deadline of 2 s" in state["last_error"] and state["failures"] >= 1
    assert state["retry_at"]
    assert len(daemon.engine.store.messages()) == 8
    assert not daemon.workers
    if pid is not None:  # the worker that was running at the stop is gone too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


DAEMON_SCRIPT = """
import sys
sys.path.insert(0, {cwd!r})
import tests.support.feed as feed, tests.support.hang as hang
from pathlib import Path
from agent.config import load_config
from agent.plugins import make_plugin_host
from agent.scheduler import Daemon
from agent.store import Store
from agent.sync import SyncEngine
hang.HangConnector.deadline = 3600.0
host = make_plugin_host(entrypoints=False, extra=[feed, hang])
config = load_config(Path({config!r}), host)
daemon = Daemon(SyncEngine(config, host, Store(config.data_dir)))
daemon.install_signal_handlers()
print("ready", flush=True)
daemon.run()
print("clean exit", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_hung_sync_exits_within_10_s(tmp_path, signum):
    config = hang_config(tmp_path)
    script = textwrap.dedent(DAEMON_SCRIPT.format(cwd=os.getcwd(), config=str(config)))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(2.0)
    started = time.monotonic()
    proc.send_signal(signum)
    assert proc.wait(12) == 0
    assert time.monotonic() - started < 10
    assert "clean exit" in proc.stdout.read()
    assert len(Store(tmp_path / "data").messages()) == 8  # what was committed is kept
    out = subprocess.run(["pgrep", "-f", "retainer-sync"], capture_output=True, text=True)
    assert str(proc.pid) not in out.stdout


def test_no_retry_starts_after_a_stop():
    server = Server()
    try:
        server.on("/s", Reply(503, b"down"))
        stop = threading.Event()
        http = HttpClient(base_url=server.url, backoff=0.5, backoff_cap=0.5, max_retries=50,
                          should_stop=stop.is_set)
        threading.Timer(0.2, stop.set).start()
        started = time.monotonic()
        with pytest.raises(TransientError, match="stopping"):
            http.request("GET", "/s")
        assert time.monotonic() - started < 1.5
        assert http.requests_made == 1  # the backoff wait was cut short; no second try
    finally:
        server.stop()


def test_stop_cuts_a_long_retry_after_wait():
    server = Server()
    try:
        server.on("/s", Reply(429, b"{}", headers={"Retry-After": "20"}))
        stop = threading.Event()
        http = HttpClient(base_url=server.url, max_retry_after=60, should_stop=stop.is_set)
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        with pytest.raises(TransientError):
            http.request("GET", "/s")
        assert time.monotonic() - started < 2
        assert http.requests_made == 1
    finally:
        server.stop()


def imap_engine(tmp_path: Path, mailbox: Mailbox, proxy: TcpProxy, monkeypatch,
                **settings: object) -> SyncEngine:
    monkeypatch.setenv(PASSWORD_ENV, mailbox.password)
    toml = mailbox.source_toml("slow", port=proxy.port, **settings)
    path = tmp_path / "config.toml"
    path.write_text(f'[agent]\ndata_dir = "{tmp_path}/data"\n' + toml)
    host = make_plugin_host(entrypoints=False, extra=[plugins.imap])
    config = load_config(path, host)
    return SyncEngine(config, host, Store(config.data_dir))


def test_trickling_imap_server_is_cut_by_the_operation_deadline(tmp_path, dovecot_mailbox,
                                                               monkeypatch):
    dovecot_mailbox.append("INBOX", b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n")
    target = (dovecot_mailbox.server.host, dovecot_mailbox.server.port)
    with socket.create_connection(target, timeout=5) as probe:
        greeting = probe.makefile("rb").readline()
    # the greeting arrives at full speed, then one byte every 2 s: never a socket timeout
    proxy = TcpProxy(target, trickle_after=len(greeting) + 8, trickle_every=2.0)
    try:
        engine = imap_engine(tmp_path, dovecot_mailbox, proxy, monkeypatch, timeout=5,
                             operation_deadline=3, max_reconnects=3)
        started = time.monotonic()
        result = engine.sync_source(engine.config.source("slow"))
        took = time.monotonic() - started
    finally:
        proxy.cut()
    assert not result.ok and result.error_kind == "transient"
    assert "did not complete a command within 3 s" in result.error
    assert took < 8  # not 3 reconnects, not a socket timeout per trickled byte


def test_trickling_greeting_is_cut_too(tmp_path, dovecot_mailbox, monkeypatch):
    proxy = TcpProxy((dovecot_mailbox.server.host, dovecot_mailbox.server.port),
                     trickle_after=0, trickle_every=2.0)
    try:
        engine = imap_engine(tmp_path, dovecot_mailbox, proxy, monkeypatch, timeout=5,
                             operation_deadline=2)
        started = time.monotonic()
        result = engine.sync_source(engine.config.source("slow"))
    finally:
        proxy.cut()
    assert "did not complete a command within 2 s" in result.error
    assert time.monotonic() - started < 6


def test_black_hole_imap_server_fails_at_the_socket_timeout(tmp_path, dovecot_mailbox,
                                                            monkeypatch):
    proxy = TcpProxy((dovecot_mailbox.server.host, dovecot_mailbox.server.port), hang=True)
    try:
        engine = imap_engine(tmp_path, dovecot_mailbox, proxy, monkeypatch, timeout=1.5)
        started = time.monotonic()
        result = engine.sync_source(engine.config.source("slow"))
    finally:
        proxy.cut()
    assert not result.ok and result.error_kind == "transient"
    assert time.monotonic() - started < 6


def test_sending_never_touches_a_running_syncs_scratch(tmp_path):
    from agent.errors import UnsupportedOperation
    from agent.models import Identity, Outgoing
    from agent.review import send

    path = hang_config(tmp_path, mode="hold")
    host = make_plugin_host(entrypoints=False, extra=[feed, hang])
    config = load_config(path, host)
    store = Store(config.data_dir)
    engine = SyncEngine(config, host, store)
    hang.HOLDING.clear()
    hang.RELEASE.clear()
    results = []
    thread = threading.Thread(target=lambda: results.append(
        engine.sync_source(config.source("stuck"))))
    thread.start()
    try:
        assert hang.HOLDING.wait(10)
        scratch = store.tmp_dir / "stuck"
        assert (scratch / "download.part").exists()
        with pytest.raises(UnsupportedOperation):  # what `review approve --send` does
            send(config, host, Store(config.data_dir), "stuck",
                 Outgoing(to=Identity("email", "maria@example.com"), text="thanks"))
        assert (scratch / "download.part").exists()
    finally:
        hang.RELEASE.set()
        thread.join(10)
    assert results and results[0].ok, results[0].error
