"""End to end: a Maildir holding the (reconstructed) notification samples, synced with the
real `retainer sync` (maildir plugin + this plugin + store), then read back with the
real listing commands."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import plugins.maildir
import plugins.marketplace_mail
from agent.cli import App, cli
from agent.errors import ConfigError
from agent.plugins import make_plugin_host
from tests.plugins.marketplace_mail.conftest import SAMPLES

OWNER = "sam@brightbakery.example"
ROBOT_WORDS = ("fiverr", "upwork", "freelancer", "noreply", "donotreply", "no-reply")


def run(config: Path, *args: str, expect: int = 0) -> Any:
    app = App(config, False, 0)
    app._host = make_plugin_host(entrypoints=False,
                                 extra=[plugins.maildir, plugins.marketplace_mail])
    result = CliRunner().invoke(cli, ["--config", str(config), *args], obj=app)
    assert result.exit_code == expect, result.output + str(result.exception)
    return result


def listing(config: Path, *args: str) -> Any:
    return json.loads(run(config, *args, "--json").stdout)


def make_maildir(root: Path, names: list[str], folder: str = "") -> None:
    base = root / folder if folder else root
    for sub in ("cur", "new", "tmp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        unique = f"1763900000.M{index}P{os.getpid()}.host-{name.replace('.', '_')}"
        shutil.copyfile(SAMPLES / name, base / "tmp" / unique)
        (base / "tmp" / unique).rename(base / "new" / unique)


def make_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f"""
[agent]
data_dir = "{tmp_path}/data"
owner_emails = ["{OWNER}"]

[[sources]]
name = "mail"
platform = "maildir"
[sources.settings]
path = "{tmp_path}/Mail"
""")
    return config


def test_notifications_synced_from_a_maildir(tmp_path: Path) -> None:
    samples = sorted(p.name for p in SAMPLES.glob("*.eml"))
    make_maildir(tmp_path / "Mail", samples)
    # the same delivery and message filed twice (a copy in a subfolder): stored once
    make_maildir(tmp_path / "Mail", ["fiverr-delivered.eml", "upwork-message.eml"],
                 folder=".Archive")
    config = make_config(tmp_path)
    run(config, "sync")

    roster = listing(config, "contractors")
    by_name = {c["name"]: c for c in roster}
    assert sorted(by_name) == ["Dev Master", "Ink Wizard", "Jane D.", "Pixel Craft"]
    pixel = by_name["Pixel Craft"]
    assert pixel["platforms"] == ["fiverr"]
    assert pixel["addresses"] == ["pixelcraft_studio"]
    assert pixel["status"] == "trial"
    assert by_name["Jane D."]["platforms"] == ["upwork"]
    assert by_name["Dev Master"]["platforms"] == ["freelancer"]

    people = roster + listing(config, "contractors", "candidates")
    for doc in people:
        text = json.dumps(doc).lower()
        for word in ROBOT_WORDS:
            assert f"{word}@" not in text and f"@{word}" not in text, doc
        assert (doc.get("name") or "").lower() not in ROBOT_WORDS, doc
    candidates = {d["key"] for d in listing(config, "contractors", "candidates")}
    assert candidates == {"email:maria@lopez-design.example"}

    messages = listing(config, "messages")
    fiverr = [m for m in messages if m["platform"] == "fiverr"]
    assert len(fiverr) == 6  # message, order message, delivery, revision, completed, hostile
    pixel_msgs = listing(config, "messages", "--contractor", "Pixel Craft")
    assert {m["platform"] for m in pixel_msgs} == {"fiverr"}
    assert len(pixel_msgs) == 5
    assert {m["contractor_id"] for m in pixel_msgs} == {pixel["id"]}
    threads = {m["extra"]["notification"].get("order_id", "inbox") for m in pixel_msgs}
    assert threads == {"FO7K2M9QX4", "inbox"}
    assert len({m["thread_id"] for m in pixel_msgs}) == 2  # the inbox and the order
    revision = next(m for m in pixel_msgs if m["extra"]["notification"]["kind"] == "revision")
    assert revision["direction"] == "out"
    assert all(m["direction"] == "in" for m in pixel_msgs if m is not revision)
    for msg in messages:
        assert msg["sender"]["address"].lower() not in (
            "noreply@e.fiverr.com", "donotreply@upwork.com", "noreply@notifications.freelancer.com")
    assert len([m for m in messages if m["platform"] == "upwork"]) == 4
    assert len([m for m in messages if m["platform"] == "freelancer"]) == 2
    # newsletters, receipts and recommendations were dropped; nothing else was
    assert len(messages) == 6 + 4 + 2 + 1

    queue = listing(config, "deliverables", "--unreviewed")
    assert len(queue) == 4
    assert {d["status"] for d in queue} == {"delivery_waiting"}
    assert all(d["url"].startswith("https://www.") for d in queue)
    fiverr_delivery = next(d for d in queue if "FO7K2M9QX4" in d["filename"])
    assert fiverr_delivery["contractor_id"] == pixel["id"]
    assert fiverr_delivery["url"].startswith("https://www.fiverr.com/orders/FO7K2M9QX4")
    assert fiverr_delivery["sha256"] is None and fiverr_delivery["path"] is None
    assert fiverr_delivery["review_status"] == "unreviewed"
    assert {d["contractor_id"] for d in queue} == {c["id"] for c in roster}

    # a second sync finds nothing new and changes nothing
    everything = listing(config, "deliverables")
    assert "0 new messages" in run(config, "sync").output
    assert listing(config, "messages") == messages
    assert listing(config, "deliverables") == everything
    assert listing(config, "contractors") == roster


def test_without_the_plugin_the_robots_would_be_candidates(tmp_path: Path) -> None:
    """The control experiment: the same Maildir without the marketplace-mail plugin."""
    make_maildir(tmp_path / "Mail", ["fiverr-message.eml", "fiverr-delivered.eml"])
    config = make_config(tmp_path)
    app = App(config, False, 0)
    app._host = make_plugin_host(entrypoints=False, extra=[plugins.maildir])
    result = CliRunner().invoke(cli, ["--config", str(config), "sync"], obj=app)
    assert result.exit_code == 0, result.output
    app2 = App(config, False, 0)
    app2._host = app._host
    out = CliRunner().invoke(cli, ["--config", str(config), "contractors", "candidates",
                                   "--json"], obj=app2)
    assert {d["key"] for d in json.loads(out.stdout)} == {"email:noreply@e.fiverr.com"}


def test_real_command_line_in_a_subprocess(tmp_path: Path) -> None:
    """`retainer sync` and the listings as a separate process, plugins found the real way."""
    root = Path(__file__).resolve().parents[3]
    make_maildir(tmp_path / "Mail", ["fiverr-message.eml", "fiverr-delivered.eml",
                                     "fiverr-marketing.eml", "plain-client.eml"])
    config = make_config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(root), "RETAINER_DISABLE_PLUGINS": "imap"}

    def retainer(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tests.plugins.marketplace_mail.cli_main", "--config",
             str(config), *args], cwd=root, env=env, capture_output=True, text=True,
            timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    retainer("sync")
    plugins_listed = {p["name"]: p for p in json.loads(retainer("plugins", "--json"))}
    assert plugins_listed["marketplace-mail"]["hooks"] == ["register_mail_formats"]
    roster = json.loads(retainer("contractors", "--json"))
    assert [(c["name"], c["platforms"]) for c in roster] == [("Pixel Craft", ["fiverr"])]
    candidates = json.loads(retainer("contractors", "candidates", "--json"))
    assert [d["key"] for d in candidates] == ["email:maria@lopez-design.example"]
    messages = json.loads(retainer("messages", "--json"))
    assert sorted(m["platform"] for m in messages) == ["fiverr", "fiverr", "maildir"]
    queue = json.loads(retainer("deliverables", "--json", "--unreviewed"))
    assert [(d["status"], d["contractor_id"]) for d in queue] == [
        ("delivery_waiting", roster[0]["id"])]


def test_the_old_plugin_name_still_works_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The plugin was called "notifications": env switches and [plugins.NAME] still take it."""
    from agent.config import load_config

    monkeypatch.delenv("RETAINER_LOAD_PLUGINS", raising=False)
    monkeypatch.setenv("RETAINER_DISABLE_PLUGINS", "notifications")
    with caplog.at_level(logging.WARNING, logger="retainer.plugins"):
        host = make_plugin_host()
    assert "marketplace-mail" not in host.infos and "maildir" in host.infos
    assert 'the plugin "notifications" is now called "marketplace-mail"' in caplog.text
    monkeypatch.setenv("RETAINER_DISABLE_PLUGINS", "")
    monkeypatch.setenv("RETAINER_LOAD_PLUGINS", "maildir,notifications")
    assert sorted(make_plugin_host().infos) == ["maildir", "marketplace-mail"]

    (tmp_path / "Mail").mkdir()
    config = make_config(tmp_path)
    config.write_text(config.read_text() + "\n[plugins.notifications]\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retainer.plugins"):
        load_config(config, make_plugin_host())  # accepted, not "no installed plugin"
    assert "plugins.notifications: the plugin \"notifications\" is now called" in caplog.text
    config.write_text(config.read_text().replace("[plugins.notifications]", "[plugins.nosuch]"))
    with pytest.raises(ConfigError, match=r"plugins\.nosuch: no installed plugin"):
        load_config(config, make_plugin_host())
