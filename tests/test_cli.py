from __future__ import annotations

import json
import stat

from click.testing import CliRunner

import tests.support.feed as feed
from agent.cli import App, cli
from agent.plugins import make_plugin_host
from tests.test_sync import make_config


def run(config, *args, expect=0):
    app = App(config, False, 0)
    app._host = make_plugin_host(entrypoints=False, extra=[feed])
    result = CliRunner().invoke(cli, ["--config", str(config), *args], obj=app)
    assert result.exit_code == expect, result.output + str(result.exception)
    return result


def test_sync_then_listings_as_json(tmp_path):
    config = make_config(tmp_path)
    run(config, "sync")
    messages = json.loads(run(config, "messages", "--json").stdout)
    assert len(messages) == 8
    for key in ("id", "source", "thread_id", "contractor_id", "direction", "sent_at",
                "subject", "text"):
        assert key in messages[0]
    queue = json.loads(run(config, "deliverables", "--json", "--unreviewed").stdout)
    assert len(queue) == 7
    for key in ("id", "source", "message_id", "contractor_id", "filename", "size", "sha256",
                "path", "received_at", "review_status"):
        assert key in queue[0]
    assert {d["review_status"] for d in queue} == {"unreviewed"}
    status = json.loads(run(config, "status", "--json").stdout)
    assert {s["source"]: s["messages"] for s in status["sources"]} == {"feed": 7, "other": 1}
    roster = json.loads(run(config, "contractors", "--json").stdout)
    assert [c["name"] for c in roster] == ["Maria Lopez"]
    maria = json.loads(run(config, "messages", "--json", "--contractor", "Maria Lopez").stdout)
    assert len(maria) == 7


def test_human_output(tmp_path):
    config = make_config(tmp_path)
    run(config, "sync")
    assert "logo-0.png" in run(config, "deliverables").stdout
    assert "Maria Lopez" in run(config, "contractors").stdout
    assert "news@shop.example" in run(config, "contractors", "candidates").stdout
    assert "feed" in run(config, "status").stdout


def test_promote_candidate_and_change_status(tmp_path):
    config = make_config(tmp_path)
    run(config, "sync")
    run(config, "contractors", "add", "news@shop.example", "--name", "Shop", "--skill", "copy")
    names = [c["name"] for c in json.loads(run(config, "contractors", "--json").stdout)]
    assert names == ["Maria Lopez", "Shop"]
    run(config, "contractors", "status", "Shop", "core")
    shown = json.loads(run(config, "contractors", "show", "Shop", "--json").stdout)
    assert shown["status"] == "core" and shown["messages"] == 1
    run(config, "contractors", "demote", "Shop")
    assert len(json.loads(run(config, "contractors", "--json").stdout)) == 1


def test_failed_source_exits_1_with_clear_message(tmp_path):
    config = make_config(tmp_path, fail="auth")
    result = run(config, "sync", "feed", expect=1)
    assert "refused the token" in result.stderr


def test_unknown_source_and_bad_config(tmp_path):
    config = make_config(tmp_path)
    assert 'no source named "nope"' in run(config, "sync", "nope", expect=1).stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[sources]]\nname = "x"\nplatform = "feed"\n')
    result = run(bad, "config", "check", expect=1)
    assert 'sources[0] ("x"): settings.path' in result.stderr


def test_config_check_redacts(tmp_path, monkeypatch):
    config = make_config(tmp_path)
    assert "ok" in run(config, "config", "check").stdout
    doc = json.loads(run(config, "config", "check", "--json").stdout)
    assert doc["ok"] and [s["name"] for s in doc["sources"]] == ["feed", "other"]


def test_init_writes_private_starter_config(tmp_path):
    path = tmp_path / "cfg" / "config.toml"
    run(path, "init")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "[agent]" in path.read_text()
    assert "already exists" in run(path, "init", expect=1).stderr


def test_plugins_json(tmp_path):
    doc = json.loads(run(tmp_path / "c.toml", "plugins", "--json").stdout)
    (info,) = doc
    assert info["platforms"] == ["feed"] and "register_platforms" in info["hooks"]
