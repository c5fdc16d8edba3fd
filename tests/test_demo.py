"""The bundled demo: a deterministic sample Maildir, its config, and `retainer demo` end to end."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner, Result

import plugins.maildir
from agent.cli import App, build_cli
from agent.config import load_config
from agent.connector import DemoContext, DemoSource, Platform, SourceContext
from agent.demo import (
    BULK_SENDERS,
    CONTRACTORS,
    EXAMPLE_HEADER,
    EXAMPLE_TARGET,
    LIVE_OFF,
    Demo,
    build_demo,
    generate,
)
from agent.errors import ConfigError
from agent.mail import message_from_bytes
from agent.plugins import hookimpl, make_plugin_host

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent
SEEDED = {p.name for p in CONTRACTORS if p.seeded}
UNSEEDED = {p.email for p in CONTRACTORS if not p.seeded}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def cli(config: Path | None, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "agent"]
    if config is not None:
        command += ["--config", str(config)]
    env = {**os.environ, "RETAINER_DISABLE_PLUGINS": os.environ.get(
        "RETAINER_DISABLE_PLUGINS", "")}
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd or ROOT, env=env, check=False)


def build(target: Path) -> Demo:
    """The demo with only the maildir platform (no sandboxes to stop)."""
    with ExitStack() as stack:
        return build_demo(target, [plugins.maildir.PLATFORM], stack, now=NOW)


def test_build_is_deterministic_and_small(tmp_path):
    first = build(tmp_path / "a").config
    build(tmp_path / "b")
    maildir_a, maildir_b = tree(tmp_path / "a" / "Maildir"), tree(tmp_path / "b" / "Maildir")
    assert maildir_a == maildir_b
    assert 250 <= len(maildir_a) <= 350
    assert sum(len(v) for v in maildir_a.values()) < 3 * 1024 * 1024
    assert first == tmp_path / "a" / "retainer.toml"
    assert {Path(k).parts[0] for k in maildir_a} == {"cur", "new", ".Sent", ".Newsletters"}


def test_refuses_to_overwrite_an_existing_demo(tmp_path):
    build(tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        build(tmp_path)
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "Maildir").mkdir()
    (tmp_path / "again" / "Maildir" / "cur").mkdir()
    with pytest.raises(ConfigError, match="Maildir already exists"):
        build(tmp_path / "again")


def test_config_is_valid_and_matches_the_committed_example(tmp_path):
    config_path = build(tmp_path).config
    host = make_plugin_host(entrypoints=False, extra=[plugins.maildir])
    config = load_config(config_path, host)
    assert config.data_dir == tmp_path.resolve() / "data"
    assert {c.name for c in config.contractors} == SEEDED and len(SEEDED) == 7
    (source,) = config.sources
    assert source.platform == "maildir"
    assert config.settings[source.name].path == tmp_path.resolve() / "Maildir"
    example = EXAMPLE_HEADER + config_path.read_text().replace(str(tmp_path.resolve()),
                                                               EXAMPLE_TARGET)
    assert (ROOT / "configs" / "demo.toml").read_text() == example
    assert EXAMPLE_TARGET in example


def test_sample_mail_is_realistic():
    messages = generate(NOW)
    ctx = SourceContext("demo", "maildir", Path("/nonexistent"), Path("/nonexistent"),
                        wants_attachments=lambda identity: True)
    parsed = [message_from_bytes(raw, ctx) for _, _, _, raw in messages]
    senders = {m.sender.address for m in parsed}
    assert {p.email for p in CONTRACTORS} <= senders
    assert {address for _, address, _ in BULK_SENDERS} <= senders
    replies = [m for m in parsed if m.extra.get("in_reply_to")]
    assert len(replies) > 100
    assert all(m.subject.startswith("Re: ") for m in replies)
    people = {p.email for p in CONTRACTORS}
    conversations = [m for m in parsed if m.sender.address in people
                     or any(r.address in people for r in m.recipients)]
    assert len({m.thread_remote_id for m in conversations}) < len(conversations) / 3
    files = [a for m in parsed for a in m.attachments if not a.inline]
    inline = [a for m in parsed for a in m.attachments if a.inline]
    assert inline and all(a.content_type == "image/png" for a in inline)
    by_ext: dict[str, list[bytes]] = {}
    for att in files:
        assert att.data is not None
        by_ext.setdefault(att.filename.rsplit(".", 1)[-1], []).append(att.data)
    assert {"png", "pdf", "zip", "docx", "svg"} <= set(by_ext)
    assert all(d.startswith(b"\x89PNG\r\n\x1a\n") for d in by_ext["png"])
    assert all(d.startswith(b"%PDF-1.4") and d.rstrip().endswith(b"%%EOF") for d in by_ext["pdf"])
    for data in by_ext["zip"] + by_ext["docx"]:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert archive.testzip() is None
    for data in by_ext["docx"]:
        assert "word/document.xml" in zipfile.ZipFile(io.BytesIO(data)).namelist()
    names = [a.filename for a in files]
    assert "../../etc/passwd" in names  # the hostile one
    assert any("<script>" in m.html for m in parsed)
    assert any("NoBoundaryInMultipartDefect" in m.extra.get("defects", ()) for m in parsed)
    dates = [when for when, _, _, _ in messages]
    assert max(dates) <= NOW and min(dates) > NOW.replace(year=2026, month=8)


def test_retainer_demo_end_to_end(tmp_path):
    target = tmp_path / "demo"
    result = cli(None, "demo", "--dir", str(target))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Review queue" in out and "Roster" in out and "Candidates" in out
    queue_part = out.split("Review queue")[1].split("== Roster")[0]
    roster_part = out.split("== Roster")[1].split("== Candidates")[0]
    candidates_part = out.split("== Candidates")[1]
    for name in SEEDED:
        assert name in roster_part
    for address in UNSEEDED | {a for _, a, _ in BULK_SENDERS}:
        assert address in candidates_part
        assert address not in roster_part
    assert "inventory-sync-v2.zip" in queue_part  # the newest work waits for review
    assert "passwd" in queue_part and "../" not in queue_part
    assert "attachment name '../../etc/passwd' is unsafe" in result.stderr
    assert "dropped 2 script" in result.stderr

    config = target / "retainer.toml"
    roster = json.loads(cli(config, "contractors", "--json").stdout)
    by_platform: dict[str, set[str]] = {}
    for c in roster:
        for platform in c["platforms"]:
            by_platform.setdefault(platform, set()).add(c["name"])
    assert by_platform["email"] == SEEDED  # mail: exactly the seeded roster
    # the marketplace sandboxes' freelancers are hired through their contracts
    assert by_platform.get("upwork") and by_platform.get("freelancer")
    platforms = {d["platform"] for d in json.loads(cli(config, "deliverables", "--json").stdout)}
    assert {"maildir", "upwork", "freelancer"} <= platforms  # three platforms, one queue
    candidates = json.loads(cli(config, "contractors", "candidates", "--json").stdout)
    keys = {c["key"] for c in candidates}
    assert {f"email:{a}" for a in UNSEEDED} <= keys
    assert {f"email:{a}" for _, a, _ in BULK_SENDERS} <= keys
    queue = json.loads(cli(config, "deliverables", "--json", "--unreviewed").stdout)
    assert len(queue) >= 10
    # a few months of the owner's history: older work reviewed and rated, briefs sent
    done = {d["filename"]: d for d in json.loads(cli(config, "deliverables", "--json").stdout)}
    assert done["winter-blend-logo-final.png"]["review_status"] == "approved"
    report = json.loads(cli(config, "report", "--json").stdout)
    assert report["totals"]["average_rating"] is not None
    assert report["totals"]["revision_rate"] is not None
    assert len(report["review_latency"]) >= 4
    assert json.loads(cli(config, "instructions", "list", "--json").stdout)
    data_dir = (target / "data").resolve()
    for item in queue:
        assert item["contractor_id"]
        if item["status"] == "delivery_waiting":  # a marketplace delivery: a link, no file
            assert item["path"] is None
            continue
        path = Path(item["path"])
        path = path if path.is_absolute() else data_dir / path
        assert path.resolve().is_relative_to(data_dir)
        assert path.stat().st_mode & 0o777 == 0o600
    # nothing from non-contractors became a deliverable (their files are only recorded)
    assert not any(item["filename"].startswith("invoice-") for item in queue)
    messages = json.loads(cli(config, "messages", "--json", "--source", "demo-mail").stdout)
    assert len(messages) == len(generate_for(target))
    # a second sync reads nothing again
    again = cli(config, "sync")
    assert again.returncode == 0 and "0 new messages" in again.stdout + again.stderr


def generate_for(target: Path) -> list[Path]:
    return [p for p in (target / "Maildir").rglob("*") if p.is_file()]


# -- a third-party platform offers its demo through the same interface ---------------------------


def _load(name: str) -> ModuleType:
    """A module of tests/example_plugin (the example third-party plugin), by path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "example_plugin" /
                                                  f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def test_a_third_party_platform_offers_its_demo_the_same_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAINER_DEMO_PORTAL_TOKEN", "")  # restored after the test
    feed, feed_server = _load("retainer_jsonfeed"), _load("jsonfeed_server")
    token = "portal-demo-token"
    stopped: list[str] = []

    @contextmanager
    def portal_demo(context: DemoContext) -> Iterator[DemoSource]:
        assert context.folder == (tmp_path / "demo").resolve()
        server = feed_server.FeedServer(token).start()
        server.add("The banner for the portal", files={"portal-banner.svg": b"<svg/>"},
                   sender="maria@lopez-studio.example", name="Maria Lopez")
        try:
            yield DemoSource("demo-portal", {"url": server.url,
                                             "token": {"env": "RETAINER_DEMO_PORTAL_TOKEN"}},
                             env={"RETAINER_DEMO_PORTAL_TOKEN": token}, live=True)
        finally:
            server.stop()
            stopped.append("portal")

    def broken_demo(context: DemoContext) -> Any:
        raise RuntimeError("the sandbox binary is missing")

    class Portal:
        __name__ = "portal"

        @hookimpl
        def register_platforms(self, register: Callable[[Platform], None]) -> None:
            register(Platform("jsonfeed", feed.JsonFeedConnector, feed.JsonFeedSettings,
                              "a contractor portal", demo=portal_demo))
            register(Platform("brokenfeed", feed.JsonFeedConnector, feed.JsonFeedSettings,
                              "a demo that fails", demo=broken_demo))

    host = make_plugin_host(entrypoints=False, extra=[plugins.maildir, Portal()])

    def run(*args: str) -> Result:
        app = App(tmp_path / "demo" / "retainer.toml", False, 0)
        app._host = host
        return CliRunner().invoke(build_cli(app), list(args), obj=app)

    result = run("demo", "--dir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    assert "Started local marketplace sandboxes: demo-portal" in result.stdout
    assert ("the brokenfeed demo was skipped: RuntimeError: the sandbox binary is missing"
            in result.stderr)
    assert stopped == ["portal"]  # its server ran for the sync and stopped with the demo
    config = (tmp_path / "demo" / "retainer.toml").read_text()
    assert 'name = "demo-portal"\nplatform = "jsonfeed"' in config
    assert LIVE_OFF in config and token not in config  # the secret stays in the environment
    messages = json.loads(run("messages", "--json", "--source", "demo-portal").stdout)
    assert [m["text"] for m in messages] == ["The banner for the portal"]
    files = json.loads(run("deliverables", "--json").stdout)
    assert {d["filename"] for d in files if d["source"] == "demo-portal"} == {
        "portal-banner.svg"}  # Maria is on the demo roster: her file is work to review
