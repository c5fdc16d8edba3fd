"""Through the real sync engine, store and command line, against the sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugins.freelancer.sandbox import Fault, Sandbox, start_sandbox
from tests.plugins.freelancer.util import TOKEN_ENV, engine_sync, run_cli, write_config

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def token_env(monkeypatch):
    def set_token(token: str) -> None:
        monkeypatch.setenv(TOKEN_ENV, token)
    return set_token


def stored(config: Path, what: str = "messages") -> list[dict]:
    return json.loads(run_cli(config, what, "--json").stdout)


def test_cli_sync_stores_messages_contracts_and_deliverables(tmp_path, token_env):
    with start_sandbox(seed=31, threads=9, messages_per_thread=5,
                       big_attachment_bytes=300_000) as sandbox:
        token_env(sandbox.token)
        config = write_config(tmp_path, sandbox, agent_extra="max_attachment_mb = 0.2")
        run_cli(config, "sync")
        messages = stored(config)
        assert sorted(m["id"] for m in messages) == sorted({m["id"] for m in messages})
        assert {m["source"] for m in messages} == {"fl"}
        assert len(messages) == len(sandbox.messages)
        by_thread = {m["thread_id"] for m in messages}
        assert len(by_thread) == len(sandbox.threads)
        assert {m["direction"] for m in messages} == {"in", "out"}
        deliverables = stored(config, "deliverables")
        statuses = {d["status"] for d in deliverables}
        assert {"stored", "too_large", "delivery_waiting"} <= statuses
        (big,) = [d for d in deliverables if d["filename"] == "export-full.zip"]
        assert big["flagged"] and big["path"] is None and big["size"] == 300_000
        for d in deliverables:
            if d["status"] == "stored":
                assert Path(d["path"]).stat().st_mode & 0o777 == 0o600
                assert d["contractor_id"]
        roster = stored(config, "contractors")
        hired = {b["bidder_id"] for b in sandbox.bids.values() if b["award_status"] == "awarded"}
        assert {c["name"] for c in roster} == {sandbox.users[u]["display_name"] for u in hired}
        assert "Dana Whitfield" not in {c["name"] for c in roster}  # the owner is not hired
        sandbox.reset_log()
        again = json.loads(run_cli(config, "sync", "--json").stdout)
        assert again[0]["ok"] and again[0]["messages_new"] == 0
        assert len(sandbox.requests) == 1  # a no-op sync: one threads page


def test_cli_revoked_token_exits_1_with_a_clear_message_and_keeps_data(tmp_path, token_env):
    with start_sandbox(seed=32, threads=6, messages_per_thread=4) as sandbox:
        token_env(sandbox.token)
        config = write_config(tmp_path, sandbox)
        run_cli(config, "sync")
        before = stored(config)
        sandbox.clock.advance(10)
        tid = max(sandbox.threads)
        sandbox.add_message(tid, sandbox.owner_id, "new after the revocation")
        sandbox.revoke_token()
        result = run_cli(config, "sync", expect=1)
        assert "Create a new token at https://accounts.freelancer.com/settings/develop" in result.output
        assert 'token of "fl" points in your config' in result.output
        assert sandbox.token not in result.output
        status = json.loads(run_cli(config, "status", "--json").stdout)
        (fl,) = [s for s in status["sources"] if s["source"] == "fl"]
        assert "new token" in (fl.get("last_error") or "")
        assert stored(config) == before  # nothing lost
        token_env(sandbox.issue_token())
        run_cli(config, "sync")
        assert len(stored(config)) == len(before) + 1


@pytest.mark.parametrize(("fault", "kind"), [("500", "transient"), ("revoke", "auth")])
def test_engine_resumes_after_a_failure_mid_sync_without_duplicates(tmp_path, token_env,
                                                                   fault, kind):
    with start_sandbox(seed=33, threads=12, messages_per_thread=6, attachment_every=0) as sandbox:
        token_env(sandbox.token)
        config = write_config(tmp_path, sandbox,
                              extra="page_size = 10\nthreads_per_request = 3")
        sandbox.inject(Fault(fault, times=-1, path="/api/messages/0.1/messages/", skip=5))
        result, store = engine_sync(config)
        assert not result.ok and result.error_kind == kind
        partial = {m["id"] for m in store.messages()}
        assert 0 < len(partial) < len(sandbox.messages)
        sandbox.clear_faults()
        token_env(sandbox.issue_token())
        result, store = engine_sync(config)
        assert result.ok
        ids = [m["remote_id"] for m in store.messages()]
        assert sorted(ids) == sorted(str(m) for m in sandbox.messages)


# -- kill -9 during a sync, the sandbox in another process -----------------------------------


def _sandbox_process(args: list[str]) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.freelancer_sandbox", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, json.loads(line)


@pytest.mark.slow
def test_kill_9_during_sync_then_resume_loses_nothing_and_repeats_nothing(tmp_path):
    seed, threads, per_thread = 34, 40, 8
    args = ["--seed", str(seed), "--threads", str(threads), "--messages-per-thread",
            str(per_thread), "--latency", "0.02", "--attachment-every", "4"]
    server, info = _sandbox_process(args)
    # the same seed builds the same ids: what the server holds, without asking it
    expected = Sandbox(seed=seed, threads=threads, messages_per_thread=per_thread,
                       attachment_every=4)
    try:
        config = write_config(tmp_path, _Address(info["base_url"]),
                              extra="page_size = 10\nthreads_per_request = 2")
        env = {**os.environ, TOKEN_ENV: info["token"], "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "tests.plugins.freelancer.cli_main", "--config",
                   str(config), "sync"]
        kills = 0
        for delay in (1.2, 0.9, 1.5):
            sync = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(delay)
            if sync.poll() is None:
                sync.send_signal(signal.SIGKILL)
                kills += 1
            sync.wait(timeout=30)
        assert kills >= 1, "the sync finished before it could be killed; slow the sandbox"
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        listed = subprocess.run(
            [sys.executable, "-m", "tests.plugins.freelancer.cli_main", "--config",
             str(config), "messages", "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
        messages = json.loads(listed.stdout)
        ids = [m["id"] for m in messages]
        assert len(ids) == len(set(ids))  # nothing twice
        remote = sorted(m["remote_id"] for m in messages)
        assert remote == sorted(str(m) for m in expected.messages)  # nothing lost
        files = subprocess.run(
            [sys.executable, "-m", "tests.plugins.freelancer.cli_main", "--config",
             str(config), "deliverables", "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
        deliverables = json.loads(files.stdout)
        keys = [d["id"] for d in deliverables]
        assert len(keys) == len(set(keys))
        hired = {b["bidder_id"] for b in expected.bids.values()
                 if b["award_status"] == "awarded"}
        want = [f for f in expected.files.values()
                if expected.messages[f.message_id]["from_user"] in hired]
        assert len([d for d in deliverables if d["status"] == "stored"]) == len(want)
        assert not list((tmp_path / "data").rglob(".tmp-*"))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


class _Address:
    """Enough of a Sandbox for write_config: where the other process listens."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url


def test_a_file_in_the_first_page_of_a_later_sync_is_stored(tmp_path, token_env):
    # the store empties its temp folder on its first write of a run; downloads made
    # before that (messages are the first page once contracts are fresh) must survive
    with start_sandbox(seed=35, threads=6, messages_per_thread=3) as sandbox:
        token_env(sandbox.token)
        config = write_config(tmp_path, sandbox)
        assert engine_sync(config)[0].ok
        bid = next(b for b in sandbox.bids.values() if b["award_status"] == "awarded")
        tid = next(t for t, thread in sandbox.threads.items()
                   if bid["bidder_id"] in thread["thread"]["members"])
        sandbox.clock.advance(5)
        sandbox.add_message(tid, bid["bidder_id"], "v2 attached",
                            files=[("v2.pdf", b"%PDF-1.7 v2", "application/pdf")])
        result, store = engine_sync(config)
        assert result.ok, result.error
        (doc,) = [d for d in store.deliverables() if d["filename"] == "v2.pdf"]
        assert doc["status"] == "stored" and Path(doc["path"]).read_bytes() == b"%PDF-1.7 v2"
        assert not list((tmp_path / "data").rglob(".tmp-*"))
