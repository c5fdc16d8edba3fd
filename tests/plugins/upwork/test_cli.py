"""The Upwork plugin through the real command line: sign-in, sync, listings, failures, kill -9."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result

import plugins.upwork
from agent.cli import App, build_cli, cli
from agent.plugins import make_plugin_host
from plugins.upwork.oauth import TOKEN_FILE
from plugins.upwork.sandbox import DEFAULT_CLIENT_SECRET, Sandbox, start_sandbox
from tests.plugins.upwork.util import ROOT, SOURCE, cli_command

SECRET_ENV = "UPWORK_SANDBOX_SECRET"


def write_config(tmp_path: Path, base_url: str, *, max_mb: float = 50, agent_extra: str = "",
                 **settings: Any) -> Path:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    path = tmp_path / "config.toml"
    path.write_text(f"""
[agent]
data_dir = "{tmp_path}/data"
owner_emails = ["dana@northwind.example"]
max_attachment_mb = {max_mb}
{agent_extra}

[[sources]]
name = "{SOURCE}"
platform = "upwork"
[sources.settings]
client_id = "sandbox-client"
client_secret = {{ env = "{SECRET_ENV}" }}
api_url = "{base_url}/graphql"
token_url = "{base_url}/api/v3/oauth2/token"
auth_url = "{base_url}/ab/account-security/oauth2/authorize"
redirect_uri = "http://127.0.0.1/retainer/upwork"
{extra}""")
    return path


def run(config: Path, *args: str, expect: int = 0, input: str | None = None) -> Result:
    app = App(config, False, 0)
    app._host = make_plugin_host(entrypoints=False, extra=[plugins.upwork])
    build_cli(app)
    result = CliRunner().invoke(cli, ["--config", str(config), *args], obj=app, input=input)
    assert result.exit_code == expect, result.output + repr(result.exception)
    return result


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, DEFAULT_CLIENT_SECRET)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with start_sandbox(seed=11, threads=5, messages_per_thread=10) as box:
        yield box


def _bytes_under(folder: Path) -> int:
    """Bytes in the files of ``folder``; a temp file renamed while we look is skipped."""
    total = 0
    for path in folder.glob("*"):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "sources" / SOURCE


def follow(url: str) -> str:
    """What a browser would do: open the authorize URL, land on the redirect."""
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    return answer.headers["Location"]


def test_auth_command_signs_in_and_saves_tokens_0600(sandbox: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, sandbox.base_url)
    printed = run(config, "auth", "upwork", SOURCE, "--print-url").output
    url = next(line.strip() for line in printed.splitlines() if "oauth2/authorize?" in line)
    assert "response_type=code" in url and "client_id=sandbox-client" in url and "state=" in url
    landed = follow(url)
    done = run(config, "auth", "upwork", SOURCE, "--code", landed).output
    assert "Signed in to Upwork as Dana W." in done
    token_file = state_dir(tmp_path) / TOKEN_FILE
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert state_dir(tmp_path).stat().st_mode & 0o777 == 0o700
    tokens = json.loads(token_file.read_text())
    assert tokens["access_token"] in sandbox.access_tokens
    assert tokens["access_token"] not in done and DEFAULT_CLIENT_SECRET not in done + printed


def test_auth_command_with_prompt(sandbox: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, sandbox.base_url)
    # the prompt accepts the bare code too; grab one by starting a sign-in first
    printed = run(config, "auth", "upwork", SOURCE, "--print-url").output
    url = next(line.strip() for line in printed.splitlines() if "oauth2/authorize?" in line)
    code = follow(url).split("code=")[1].split("&")[0]
    result = run(config, "auth", "upwork", SOURCE, input=code + "\n")
    assert "Paste the code" in result.output and "Signed in" in result.output


def test_auth_rejects_a_foreign_state_and_a_used_code(sandbox: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, sandbox.base_url)
    printed = run(config, "auth", "upwork", SOURCE, "--print-url").output
    url = next(line.strip() for line in printed.splitlines() if "oauth2/authorize?" in line)
    landed = follow(url)
    forged = landed.replace("state=", "state=x")
    assert "does not match" in run(config, "auth", "upwork", SOURCE, "--code", forged, expect=1).output
    run(config, "auth", "upwork", SOURCE, "--code", landed)
    again = run(config, "auth", "upwork", SOURCE, "--code", landed.split("&state")[0], expect=1).output
    assert "refused the authorization code" in again and "run the command again" in again


def test_sync_through_the_cli(sandbox: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, sandbox.base_url, max_mb=0.02)  # 20 KB: the seeded files are 24 KB+
    sandbox.authorize_source(state_dir(tmp_path))
    room = next(r for r in sandbox.rooms.values() if r.contract_id)
    small = sandbox.add_story(room.id, "notes attached", attachments=[("notes.txt", 900)])
    run(config, "sync", SOURCE)
    messages = json.loads(run(config, "messages", "--json").stdout)
    assert len(messages) == sandbox.story_count()
    assert {m["source"] for m in messages} == {SOURCE}
    deliverables = json.loads(run(config, "deliverables", "--json").stdout)
    by_status: dict[str, list[dict[str, Any]]] = {}
    for d in deliverables:
        by_status.setdefault(d["status"], []).append(d)
    assert by_status["too_large"] and all(d["flagged"] for d in by_status["too_large"])
    assert all(d["path"] is None for d in by_status["too_large"])
    stored = [d for d in by_status["stored"] if d["filename"] == "notes.txt"]
    assert len(stored) == 1 and stored[0]["size"] == 900 and small.id
    assert by_status["delivery_waiting"]  # milestone submissions wait for review on Upwork
    roster = json.loads(run(config, "contractors", "--json").stdout)
    contractor_names = {sandbox.users[u].name for r in sandbox.rooms.values() for u in r.user_ids
                        if u != sandbox.owner.id}
    assert contractor_names <= {c["name"] for c in roster}
    assert sandbox.owner.name not in {c["name"] for c in roster}

    before = len(sandbox.hits)
    run(config, "sync", SOURCE)
    assert [h.operation for h in sandbox.hits[before:]] == ["RetainerRoomList"]
    assert len(json.loads(run(config, "messages", "--json").stdout)) == sandbox.story_count()


def test_revoked_token_exits_1_naming_retainer_auth(sandbox: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, sandbox.base_url)
    sandbox.authorize_source(state_dir(tmp_path))
    run(config, "sync", SOURCE)
    count = len(json.loads(run(config, "messages", "--json").stdout))
    sandbox.revoke_all()
    sandbox.add_story(next(iter(sandbox.rooms)), "after the revocation")
    failed = run(config, "sync", SOURCE, expect=1)
    assert "retainer auth up" in failed.output
    assert "oauth2v2_" not in failed.output  # no token in the message
    assert len(json.loads(run(config, "messages", "--json").stdout)) == count  # nothing lost
    status = json.loads(run(config, "status", "--json").stdout)
    assert "retainer auth up" in json.dumps(status)
    # sign in again, and the sync picks up where it stopped
    sandbox.authorize_source(state_dir(tmp_path))
    run(config, "sync", SOURCE)
    assert len(json.loads(run(config, "messages", "--json").stdout)) == count + 1


def test_not_an_upwork_source(sandbox: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, sandbox.base_url)
    result = run(config, "auth", "upwork", "nope", expect=1)
    assert 'no source named "nope"' in result.output


# -- kill -9 during a sync against a sandbox in another process -----------------------------------


def start_sandbox_process(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    url_file = tmp_path / "sandbox.url"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.upwork_sandbox", "--url-file", str(url_file), *args],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 20
    while not url_file.exists():
        assert proc.poll() is None, "the sandbox process died"
        assert time.monotonic() < deadline, "the sandbox did not start"
        time.sleep(0.05)
    return proc, url_file.read_text().strip()


@pytest.mark.slow
def test_kill_9_mid_sync_then_resume(tmp_path: Path) -> None:
    state = state_dir(tmp_path)
    state.mkdir(parents=True, mode=0o700)
    proc, base_url = start_sandbox_process(
        tmp_path, "--seed", "5", "--threads", "30", "--messages", "6", "--latency", "0.01",
        "--authorize", str(state))
    try:
        config = write_config(tmp_path, base_url, page_size=2)
        env = {**os.environ, SECRET_ENV: DEFAULT_CLIENT_SECRET, "PYTHONPATH": str(ROOT)}
        sync = subprocess.Popen(cli_command("--config", str(config), "sync", SOURCE), cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # wait until some pages are committed (the store holds messages), then kill -9
        deadline = time.monotonic() + 60
        while True:
            assert sync.poll() is None, "the sync finished before it could be killed; slow it down"
            assert time.monotonic() < deadline
            if _bytes_under(tmp_path / "data" / "store" / "messages") > 20_000:
                break
            time.sleep(0.05)
        sync.send_signal(signal.SIGKILL)
        sync.wait(timeout=10)
        assert sync.returncode == -signal.SIGKILL
        partial = subprocess.run(cli_command("--config", str(config), "messages", "--json"), cwd=ROOT,
                                 env=env, capture_output=True, timeout=120)
        assert 0 < len(json.loads(partial.stdout)) < 30 * 6  # really killed mid-sync

        done = subprocess.run(cli_command("--config", str(config), "sync", SOURCE), cwd=ROOT, env=env,
                              capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr.decode()
        listed = subprocess.run(cli_command("--config", str(config), "messages", "--json"), cwd=ROOT,
                                env=env, capture_output=True, timeout=120)
        messages = json.loads(listed.stdout)
        remote_ids = [m["remote_id"] for m in messages]
        assert len(remote_ids) == len(set(remote_ids)) == 30 * 6  # nothing lost, nothing twice
        files = json.loads(subprocess.run(cli_command("--config", str(config), "deliverables", "--json"),
                                          cwd=ROOT, env=env, capture_output=True, timeout=120).stdout)
        keys = [(d["source"], d["remote_id"]) for d in files]
        assert len(keys) == len(set(keys))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
