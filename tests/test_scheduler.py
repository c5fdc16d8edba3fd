from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta

import pytest

import tests.support.feed as feed
from agent.config import load_config
from agent.errors import StoreLocked
from agent.plugins import make_plugin_host
from agent.scheduler import Daemon, backoff_for
from agent.store import Store
from agent.sync import SyncEngine
from tests.test_sync import make_config


def daemon_for(tmp_path, **settings):
    host = make_plugin_host(entrypoints=False, extra=[feed])
    path = make_config(tmp_path, **settings)
    text = path.read_text().replace('platform = "feed"', 'platform = "feed"\nevery = "1s"')
    path.write_text(text)
    config = load_config(path, host)
    return Daemon(SyncEngine(config, host, Store(config.data_dir)))


def test_failing_source_neither_kills_loop_nor_starves_others(tmp_path):
    daemon = daemon_for(tmp_path, fail="crash")
    thread = threading.Thread(target=daemon.run)
    thread.start()
    time.sleep(4.5)
    daemon.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert daemon.runs["other"] >= 4  # healthy source kept its 1 s schedule
    assert daemon.runs["feed"] <= 3  # failing source backs off: 1 s, then 2 s, then 4 s
    state = daemon.engine.store.source_state("feed")
    assert state["failures"] >= 1 and state["retry_at"] and "boom" in state["last_error"]
    assert daemon.engine.store.source_state("other")["next_run"]


def test_second_daemon_on_same_data_dir_is_refused(tmp_path):
    first = daemon_for(tmp_path)
    thread = threading.Thread(target=first.run)
    thread.start()
    try:
        time.sleep(0.5)
        with pytest.raises(StoreLocked, match="already running"):
            daemon_for(tmp_path).run()
    finally:
        first.stop()
        thread.join(10)


def test_backoff_grows_and_honours_retry_after():
    every = timedelta(minutes=5)
    assert backoff_for(every, 1, None) == every
    assert backoff_for(every, 3, None) == every * 4
    assert backoff_for(every, 30, None) == timedelta(hours=6)
    assert backoff_for(every, 1, 3600) == timedelta(hours=1)


def test_sigterm_stops_cleanly(tmp_path):
    config = make_config(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.getcwd()!r})
        import tests.support.feed as feed
        from agent.config import load_config
        from agent.plugins import make_plugin_host
        from agent.scheduler import Daemon
        from agent.store import Store
        from agent.sync import SyncEngine
        host = make_plugin_host(entrypoints=False, extra=[feed])
        config = load_config(__import__("pathlib").Path({str(config)!r}), host)
        daemon = Daemon(SyncEngine(config, host, Store(config.data_dir)))
        daemon.install_signal_handlers()
        print("ready", flush=True)
        daemon.run()
        print("clean exit", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert "clean exit" in proc.stdout.read()
    assert len(Store(tmp_path / "data").messages()) == 8
