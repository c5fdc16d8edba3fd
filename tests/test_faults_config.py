"""Bad config values and bad command-line values: a clear error naming the file and the
key (``config check``, exit 1) or a one-line error with exit 2; never a traceback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

import tests.support.feed as feed
from agent.cli import App, cli
from agent.plugins import make_plugin_host
from tests.support.workflow_mail import run as run_all
from tests.test_sync import make_config


def run(config: Path, *args: str, expect: int = 0):
    return run_all(config, *args, expect=expect, extra_plugins=(feed,))


def invoke(config: Path, *args: str):
    app = App(config, False, 0)
    app._host = make_plugin_host(entrypoints=False, extra=[feed])
    return CliRunner().invoke(cli, ["--config", str(config), *args], obj=app)


def write(tmp_path: Path, agent: str = "", source: str = "", tail: str = "") -> Path:
    path = tmp_path / "config.toml"
    agent = agent or f'data_dir = "{tmp_path}/data"'
    path.write_text(f"""
[agent]
{agent}
[[contractors]]
name = "Maria Lopez"
emails = ["maria@example.com"]
[[sources]]
name = "feed"
platform = "feed"
{source}
[sources.settings]
path = "{tmp_path}/feed.jsonl"
{tail}""")
    return path


BAD = {
    "every huge": ({"source": 'every = "9999999999d"'}, 'sources[0] ("feed").every'),
    "every inf": ({"source": "every = inf"}, 'sources[0] ("feed").every'),
    "every 1e300": ({"source": "every = 1e300"}, 'sources[0] ("feed").every'),
    "every nan": ({"source": "every = nan"}, 'sources[0] ("feed").every'),
    "overdue huge": ({"agent": 'review_overdue = "99999999999d"'}, "agent.review_overdue"),
    "data_dir empty": ({"agent": 'data_dir = ""'}, "agent.data_dir"),
    "data_dir list": ({"agent": 'data_dir = ["a"]'}, "agent.data_dir"),
    "data_dir number": ({"agent": "data_dir = 5"}, "agent.data_dir"),
    "mb nan": ({"agent": "max_attachment_mb = nan"}, "agent.max_attachment_mb"),
    "mb inf": ({"agent": "max_attachment_mb = inf"}, "agent.max_attachment_mb"),
    "mb negative": ({"agent": "max_attachment_mb = -5"}, "agent.max_attachment_mb"),
    "log level": ({"agent": 'log_level = "LOUD"'}, "agent.log_level"),
    "status boss": ({"tail": '[[contractors]]\nname = "X"\nstatus = "boss"\n'},
                    "contractors[1].status"),
    "notifier typo": ({"tail": '[[notifiers]]\ntype = "desktop"\nevnts = ["overdue"]\n'},
                      "notifiers[0] (desktop): evnts"),
    "notifier type": ({"tail": '[[notifiers]]\ntype = "pagr"\n'}, "notifiers[0]: type"),
    "plugins typo": ({"tail": "[plugins.fed]\nx = 1\n"}, "plugins.fed"),
    "plugins key typo": ({"tail": "[plugins.feed]\nlabl = 1\n"}, "plugins.feed: labl"),
    "plugins key type": ({"tail": "[plugins.feed]\nlabel = [1]\n"}, "plugins.feed: label"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_config_check_refuses_bad_values_with_file_and_key(tmp_path, case):
    parts, key = BAD[case]
    agent = parts.get("agent", "")
    if agent and "data_dir" not in agent:
        agent = f'data_dir = "{tmp_path}/data"\n{agent}'
    config = write(tmp_path, agent=agent, source=parts.get("source", ""),
                   tail=parts.get("tail", ""))
    result = invoke(config, "config", "check")
    assert result.exit_code == 1, result.output
    assert f"{config}: {key}" in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    refused = invoke(config, "sync")  # what runs syncs refuses it too
    assert refused.exit_code == 1 and f"{config}: {key}" in refused.output
    for command in (["status"], ["messages"]):  # listings read only what they need
        other = invoke(config, *command)
        assert other.exit_code in (0, 1, 2) and "Traceback" not in other.output, other.output
        assert other.exception is None or isinstance(other.exception, SystemExit)
    assert not any("[" in p.name or p.name in ("5", "") for p in tmp_path.iterdir())
    assert not (Path.cwd() / "['a']").exists()


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    config = write(tmp_path, agent=f'data_dir = "{tmp_path}/afile"')
    result = invoke(config, "config", "check")
    assert result.exit_code == 1
    assert f"{config}: agent.data_dir: {tmp_path}/afile exists and is not a folder" in result.output
    assert invoke(config, "messages").exit_code == 1


def test_non_utf8_config_is_refused_with_its_line(tmp_path):
    config = tmp_path / "config.toml"
    config.write_bytes(b'[agent]\n# caf\xe9\ndata_dir = "x"\n')
    result = invoke(config, "config", "check")
    assert result.exit_code == 1
    assert f"{config}: line 2: not UTF-8 text (byte 0xe9)" in result.output
    other = invoke(config, "messages")
    assert other.exit_code == 1 and "not UTF-8" in other.output


@pytest.mark.parametrize("args, words", [
    (["messages", "--limit", "-1"], "--limit"),
    (["report", "--since", "99999999999y"], "at most 100y"),
    (["report", "--since", "0d"], "--since"),
])
def test_bad_command_values_exit_2_with_one_line(tmp_path, args, words):
    config = make_config(tmp_path)
    result = run(config, *args, expect=2)
    assert words in result.output and "Traceback" not in result.output


def test_report_html_into_a_missing_folder(tmp_path):
    config = make_config(tmp_path)
    target = tmp_path / "nowhere" / "r.html"
    result = run(config, "report", "--html", str(target), expect=2)
    assert f"there is no folder {target.parent}" in result.output
    assert not target.parent.exists()


def test_unexpected_error_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    config = make_config(tmp_path)
    run(config, "sync")

    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr("agent.store.core.Store.iter_messages_newest_first", broken)
    result = run(config, "messages", expect=70)
    assert result.output.count("\n") == 1
    assert "unexpected KeyError" in result.output and "Traceback" not in result.output


def test_init_keeps_the_mode_of_an_existing_folder(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    result = invoke(shared / "x.toml", "init")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # not tightened to 0700
    assert stat.S_IMODE((shared / "x.toml").stat().st_mode) == 0o600
    fresh = tmp_path / "new" / "deeper"
    assert invoke(fresh / "config.toml", "init").exit_code == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700  # what init created is private
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    again = invoke(shared / "x.toml", "init")
    assert again.exit_code == 1 and "already exists" in again.output
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert os.listdir(shared) == ["x.toml"]


def test_declared_plugin_options_pass_config_check(tmp_path):
    config = write(tmp_path, tail='[plugins.feed]\nlabel = "studio"\n')
    (tmp_path / "feed.jsonl").touch()  # config check: every path a setting names exists
    result = invoke(config, "config", "check")
    assert result.exit_code == 0, result.output
