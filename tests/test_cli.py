from __future__ import annotations

import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import tests.support.feed as feed
from agent.cli import App, cli, setup_logging
from agent.cli.output import Col, fit
from agent.humanize import ago, until
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


# -- the command line as a person meets it (issue 12, item 5) ---------------------------------

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


def invoke(config, *args, env=None, expect=0):
    app = App(config, False, 0)
    app._host = make_plugin_host(entrypoints=False, extra=[feed])
    result = CliRunner(env=env).invoke(cli, ["--config", str(config), *args], obj=app)
    assert result.exit_code == expect, result.output + str(result.exception)
    return result


def wide_store(tmp_path):
    """A synced store whose tables are wider than 80 columns when nothing cuts them."""
    config = make_config(tmp_path)
    run(config, "sync")
    run(config, "contractors", "add", "news@shop.example", "--name",
        "Bartholomew Fitzgerald-Vanderhoeven of the Long Name Workshop",
        "--skill", "illustration", "--skill", "typography", "--skill", "packaging design",
        "--rate", "45")
    return config


LISTINGS = [("review",), ("review", "--all"), ("deliverables",), ("contractors",),
            ("contractors", "candidates"), ("contractors", "suggest", "logo"),
            ("contractors", "show", "Maria Lopez"), ("messages",), ("status",), ("report",),
            ("plugins",)]


def test_tables_fit_an_80_column_terminal(tmp_path):
    config = wide_store(tmp_path)
    natural = invoke(config, "contractors", env={"COLUMNS": None}).stdout
    assert max(len(line) for line in natural.splitlines()) > 80  # the roster is wide...
    for args in LISTINGS:
        out = invoke(config, *args, env={"COLUMNS": "80"}).stdout
        widest = max((len(line) for line in out.splitlines()), default=0)
        assert widest <= 80, (args, out)  # ...and every table fits 80 columns
    roster = invoke(config, "contractors", env={"COLUMNS": "80"})
    assert "Bartholomew" in roster.stdout and "…" in roster.stdout
    assert "left out to fit 80 columns" in roster.stderr  # said where the columns went


def test_fit_cuts_flexible_columns_then_drops_optional_ones():
    cells = [["d_0123456789abcdef", "a very long file name indeed.pdf", "12 KB", "unreviewed"]]
    cols = [Col("id"), Col("file", flex=True), Col("size", drop=1), Col("review")]
    assert fit(cells, cols, 200) == ([0, 1, 2, 3], [18, 32, 5, 10])
    shown, widths = fit(cells, cols, 60)
    assert shown == [0, 1, 2, 3] and sum(widths) + 2 * 3 <= 60 and widths[0] == 18
    shown, widths = fit(cells, cols, 44)
    assert shown == [0, 1, 3] and widths[0] == 18 and sum(widths) + 2 * 2 <= 44


def test_tables_show_human_times_and_json_keeps_iso(tmp_path):
    config = wide_store(tmp_path)
    for args in LISTINGS:
        out = invoke(config, *args).stdout
        assert not ISO.search(out), (args, out)
    status = invoke(config, "status").stdout
    assert "just now" in status and "0m" not in status
    assert ISO.search(invoke(config, "status", "--json").stdout)
    assert ISO.search(invoke(config, "deliverables", "--json").stdout)
    assert "ago" in invoke(config, "deliverables").stdout


def test_ago_and_until_read_like_people_talk():
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    assert ago((now - timedelta(seconds=5)).isoformat()) == "just now"
    assert ago((now - timedelta(minutes=7, seconds=2)).isoformat()) == "7 min ago"
    assert ago((now - timedelta(hours=3, minutes=1)).isoformat()) == "3 h ago"
    assert ago((now - timedelta(days=12, minutes=1)).isoformat()) == "12 d ago"
    assert ago(None) == "-" and ago(None, none="never") == "never"
    assert until((now + timedelta(minutes=4, seconds=10)).isoformat()) == "in 4 min"
    assert until((now - timedelta(minutes=4)).isoformat()) == "due"


def test_ago_from_a_kept_epoch_reads_as_ago_of_the_stamp():
    """The queue's tables print ages from seconds kept in its read model (no date parsed
    per row): the same words as from the ISO stamp, past and future, naive and offset."""
    import time
    from datetime import UTC, datetime, timedelta

    from agent.humanize import ago_seconds, epoch

    now = datetime.now(UTC)
    offsets = [timedelta(seconds=5), timedelta(minutes=7, seconds=2), timedelta(hours=3, minutes=1),
               timedelta(days=2, minutes=1), timedelta(days=400), -timedelta(minutes=4, seconds=10),
               -timedelta(days=3, hours=1)]
    for offset in offsets:
        for stamp in ((now - offset).isoformat(), (now - offset).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      (now - offset).replace(tzinfo=None).isoformat()):
            kept = epoch(stamp)
            assert kept is not None
            assert ago_seconds(time.time() - kept) == ago(stamp), stamp
    assert epoch(None) is None and epoch("not a date") is None
    assert ago_seconds(None) == "-" and ago_seconds(None, none="never") == "never"


def test_sync_summary_on_stdout_errors_once_on_stderr(tmp_path):
    config = make_config(tmp_path)
    ok = invoke(config, "sync")
    assert "feed: 7 new messages" in ok.stdout and "other: 1 new messages" in ok.stdout
    assert ok.stderr == ""
    (tmp_path / "f").mkdir()
    failing = make_config(tmp_path / "f", fail="auth")
    result = invoke(failing, "sync", expect=1)
    assert "feed: failed (auth)" in result.stdout and "other: 1 new messages" in result.stdout
    assert result.stderr.count("refused the token") == 1
    assert result.stderr.startswith("retainer: error: feed: the feed refused")
    assert "feed: feed:" not in result.stdout + result.stderr


def test_sync_summary_reaches_a_redirected_stdout(tmp_path):
    config = make_config(tmp_path)
    with (tmp_path / "log").open("w") as log:
        done = subprocess.run([sys.executable, "-m", "tests.support.feed_cli", "--config",
                               str(config), "sync"], stdout=log, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "feed: 7 new messages, 7 new deliverables" in (tmp_path / "log").read_text()
    assert done.stderr == ""


def test_verbose_prints_a_line_per_page(tmp_path):
    config = make_config(tmp_path)  # the feed's 7 messages come 3 to a page
    quiet = invoke(config, "sync")
    assert "page" not in quiet.stderr
    (tmp_path / "data").rename(tmp_path / "old")
    loud = invoke(config, "-v", "sync")
    lines = [line for line in loud.stderr.splitlines() if line.startswith("feed: page")]
    assert [line.split(" stored")[0] for line in lines] == [
        "feed: page 1", "feed: page 2", "feed: page 3"]
    assert "(7/7): 7 new messages" in lines[-1]


@pytest.mark.parametrize(("verbose", "ours", "protocol"), [
    (-1, logging.ERROR, logging.ERROR), (0, logging.WARNING, logging.WARNING),
    (1, logging.INFO, logging.INFO), (2, logging.DEBUG, logging.DEBUG)])
def test_verbosity_levels(verbose, ours, protocol):
    try:
        setup_logging(verbose)
        assert logging.getLogger("retainer.plugins.imap").getEffectiveLevel() == ours
        # what a protocol library logs at debug (imapclient's commands) needs -vv
        assert logging.getLogger("imapclient.imaplib").getEffectiveLevel() == protocol
        tracebacks = logging.getLogger("retainer.sync").isEnabledFor(logging.DEBUG)
        assert tracebacks == (verbose >= 1)  # "run with -v for the traceback"
    finally:
        setup_logging(0)


def test_bare_retainer_shows_help_and_exits_0(tmp_path):
    done = subprocess.run([sys.executable, "-m", "agent"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "RETAINER_CONFIG": str(tmp_path / "c")})
    assert done.returncode == 0
    assert "Usage: retainer" in done.stdout and "sync" in done.stdout and done.stderr == ""


def test_unknown_command_did_you_mean(tmp_path):
    result = invoke(tmp_path / "c.toml", "sycn", expect=2)
    assert "Did you mean 'sync'?" in result.stderr
    result = invoke(tmp_path / "c.toml", "contractors", "lsit", expect=2)
    assert "Did you mean 'list'?" in result.stderr


def test_unknown_config_keys_did_you_mean(tmp_path):
    config = make_config(tmp_path)
    text = config.read_text()
    config.write_text(text.replace("owner_emails", "owner_emials").replace(
        f'path = "{tmp_path}/other.jsonl"', f'paht = "{tmp_path}/other.jsonl"'))
    err = invoke(config, "config", "check", expect=1).stderr
    assert "agent.owner_emials: unknown key `owner_emials`; did you mean `owner_emails`?" in err
    config.write_text(text.replace(f'path = "{tmp_path}/other.jsonl"',
                                   f'paht = "{tmp_path}/other.jsonl"'))
    err = invoke(config, "config", "check", expect=1).stderr
    assert 'sources[1] ("other"): settings.paht: unknown key `paht`; did you mean `path`?' in err
    assert "Extra inputs are not permitted" not in err
    config.write_text(text.replace("review_since = false", "zzz = 1"))
    err = invoke(config, "config", "check", expect=1).stderr
    assert "unknown key `zzz` (known keys: data_dir, " in err


def test_config_check_checks_paths_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("RETAINER_TEST_PW", "pw")
    config = tmp_path / "c.toml"
    (tmp_path / "mail").mkdir()
    base = f"""
[agent]
data_dir = "{tmp_path}/data"
[[sources]]
name = "archive"
platform = "maildir"
[sources.settings]
path = "{tmp_path}/mail"
[[sources]]
name = "inbox"
platform = "imap"
[sources.settings]
host = "127.0.0.1"
security = "none"
username = "me"
password = {{ env = "RETAINER_TEST_PW" }}
folders = ["INBOX"]
[sources.settings.smtp]
host = "127.0.0.1"
security = "none"
"""

    def check(text, expect):
        config.write_text(text)
        app = App(config, False, 0)  # the real builtin plugins
        result = CliRunner().invoke(cli, ["--config", str(config), "config", "check"], obj=app)
        assert result.exit_code == expect, result.output
        return result

    check(base, 0)
    err = check(base.replace(f'path = "{tmp_path}/mail"', f'path = "{tmp_path}/nomail"'), 1).stderr
    assert f'sources[0] ("archive"): settings.path: {tmp_path}/nomail does not exist' in err
    err = check(base.replace('folders = ["INBOX"]',
                             f'folders = ["INBOX"]\nca_file = "{tmp_path}/ca.pem"'), 1).stderr
    assert f"ca_file {tmp_path}/ca.pem does not exist" in err
    err = check(base + f'ca_file = "{tmp_path}/smtp-ca.pem"\n', 1).stderr
    assert (f'sources[1] ("inbox"): settings.smtp.ca_file: {tmp_path}/smtp-ca.pem does not '
            "exist") in err


def test_deliverables_limit(tmp_path):
    config = make_config(tmp_path)
    run(config, "sync")
    everything = json.loads(run(config, "deliverables", "--json", "--unreviewed").stdout)
    first = json.loads(run(config, "deliverables", "--json", "--unreviewed", "--limit", "2").stdout)
    assert first == everything[:2] and len(first) == 2
    table_rows = run(config, "deliverables", "--limit", "3").stdout.strip().splitlines()
    assert len(table_rows) == 1 + 3


def test_no_sources_says_how_to_add_one(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[agent]\ndata_dir = "{tmp_path}/data"\n')
    for command in ("sync", "status"):
        out = invoke(config, command).stdout
        assert f"No sources in {config}" in out and "[[sources]]" in out
        assert "retainer config check" in out
    assert json.loads(invoke(config, "sync", "--json").stdout) == []
    assert json.loads(invoke(config, "status", "--json").stdout)["sources"] == []
    config.write_text(f'[agent]\ndata_dir = "{tmp_path}/data"\n[[sources]]\nname = "feed"\n'
                      f'platform = "feed"\nenabled = false\n[sources.settings]\n'
                      f'path = "{tmp_path}/feed.jsonl"\n')
    assert "No enabled sources" in invoke(config, "sync").stdout


def test_ctrl_c_during_sync_says_what_was_kept_and_exits_130(tmp_path):
    items = [{"id": f"<m{i}@x>", "from": "maria@example.com", "subject": f"s{i}"}
             for i in range(60)]
    feed.write_feed(tmp_path / "slow.jsonl", items)
    config = tmp_path / "c.toml"
    config.write_text(f'[agent]\ndata_dir = "{tmp_path}/data"\n[[sources]]\nname = "slow"\n'
                      f'platform = "slowfeed"\n[sources.settings]\npath = "{tmp_path}/slow.jsonl"\n'
                      "delay = 0.3\n")
    command = [sys.executable, "-m", "tests.support.feed_cli", "--config", str(config)]
    for presses in (1, 2):
        process = subprocess.Popen([*command, "-v", "sync"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        seen = ""
        deadline = time.monotonic() + 60
        while "page 2 stored" not in seen and time.monotonic() < deadline:
            seen += process.stderr.readline()
        time.sleep(0.1)  # into the next page's fetch (0.3 s)
        for _ in range(presses):  # once: that page is finished; twice: it stops at once
            process.send_signal(signal.SIGINT)
            time.sleep(0.05)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 130, seen + err
        kept = re.search(r"interrupted: kept (\d+) committed page\(s\): (\d+) new messages", err)
        assert kept, seen + err
        if presses == 1:
            assert "stopping after the page being stored" in err
            assert "slow: stopped after" in out
        status = json.loads(subprocess.run([*command, "status", "--json"], capture_output=True,
                                           text=True, timeout=60).stdout)
        stored = status["sources"][0]["messages"]
        assert 0 < stored < 60
        if presses == 1:  # the first run's own pages; the second goes on from there
            assert int(kept.group(2)) == stored and int(kept.group(1)) == stored // 3
            first = stored
        else:
            assert int(kept.group(2)) == stored - first


def run_on_terminal(command: list[str], *, stream: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``command`` with ``stream`` ("stdout" or "stderr") on a pseudo-terminal; return
    its exit code, what the terminal showed and what the other stream carried."""
    import pty

    leader, follower = pty.openpty()
    other = subprocess.PIPE
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                               stdout=follower if stream == "stdout" else other,
                               stderr=follower if stream == "stderr" else other,
                               env={**os.environ, **env})
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        shown += chunk
    out, err = process.communicate(timeout=60)
    os.close(leader)
    return process.returncode, shown.decode(), (out if stream == "stderr" else err).decode()


def test_progress_bar_on_a_terminal_only_and_only_for_a_long_sync(tmp_path):
    items = [{"id": f"<m{i}@x>", "from": "maria@example.com"} for i in range(24)]
    feed.write_feed(tmp_path / "slow.jsonl", items)
    config = tmp_path / "c.toml"
    config.write_text(f'[agent]\ndata_dir = "{tmp_path}/data"\n[[sources]]\nname = "slow"\n'
                      f'platform = "slowfeed"\n[sources.settings]\npath = "{tmp_path}/slow.jsonl"\n'
                      "delay = 0.25\n")
    command = [sys.executable, "-m", "tests.support.feed_cli", "--config", str(config), "sync"]
    code, terminal, out = run_on_terminal(command, stream="stderr", env={"COLUMNS": "80"})
    assert code == 0, terminal
    assert "slow [" in terminal and "24/24 100%" in terminal and "#" in terminal
    assert "\x1b[K" in terminal  # the bar is wiped before the summary...
    assert "slow: 24 new messages" in out  # ...which goes to stdout
    feed.write_feed(tmp_path / "slow.jsonl", [{"id": "<new@x>", "from": "a@b.c"}], append=True)
    code, terminal, out = run_on_terminal(command, stream="stderr", env={"COLUMNS": "80"})
    assert code == 0 and "[" not in terminal and "1 new messages" in out  # short: no bar
    piped = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and piped.stderr == ""  # no terminal, no bar


def test_tables_on_a_terminal_are_drawn_by_rich_within_its_width(tmp_path):
    config = wide_store(tmp_path)
    command = [sys.executable, "-m", "tests.support.feed_cli", "--config", str(config),
               "contractors"]
    code, terminal, err = run_on_terminal(command, stream="stdout", env={"COLUMNS": "80"})
    assert code == 0, terminal + err
    assert "\x1b[1m" in terminal  # a bold header row: rich drew it
    plain = re.sub(r"\x1b\[[0-9;]*m", "", terminal)
    lines = plain.replace("\r\n", "\n").splitlines()
    assert "Bartholomew" in plain and max(len(line) for line in lines) <= 80


# -- every builtin platform's settings are documented where a newcomer looks ------------------

BUILTIN_PLATFORMS = ("imap", "maildir", "upwork", "freelancer")


def settings_keys(model) -> set[str]:
    """Every key of a settings model; a nested table's as ``table.key``."""
    from pydantic import BaseModel

    keys = set()
    for name, info in model.model_fields.items():
        key = info.alias or name
        nested = [t for t in (info.annotation, *getattr(info.annotation, "__args__", ()))
                  if isinstance(t, type) and issubclass(t, BaseModel)]
        for inner in nested:
            keys |= {f"{key}.{k}" for k in settings_keys(inner)}
        if not nested:
            keys.add(key)
    return keys


def toml_block_keys(text: str, platform: str) -> set[str]:
    """The settings keys (set or commented out) of the source of ``platform`` in a
    commented TOML file."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if re.match(rf'#?\s*platform = "{platform}"', line))
    keys: set[str] = set()
    table = None
    for line in lines[start + 1:]:
        if re.match(r"#?\s*\[\[", line):
            break
        header = re.match(r"#?\s*\[sources\.settings(?:\.(\w+))?\]", line)
        if header:
            table = header.group(1) or ""
            continue
        key = re.match(r"#?\s*([a-z_]+)\s*=", line)
        if key and table is not None:
            keys.add(f"{table}.{key.group(1)}" if table else key.group(1))
    return keys


def test_every_platform_setting_in_readme_example_and_init(tmp_path):
    from pathlib import Path

    from agent.cli.starter import STARTER_CONFIG
    from agent.plugins import make_plugin_host as real_host

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    example = (root / "configs" / "retainer.example.toml").read_text()
    init = tmp_path / "config.toml"
    run(init, "init")
    assert init.read_text() == STARTER_CONFIG
    host = real_host()
    section = readme.split("### Settings of each platform", 1)[1].split("\n## ", 1)[0]
    for name in BUILTIN_PLATFORMS:
        expected = settings_keys(host.platforms[name].settings)
        assert toml_block_keys(example, name) == expected, ("example", name)
        assert toml_block_keys(STARTER_CONFIG, name) == expected, ("init", name)
        paragraph = section.split(f"**{name}**:", 1)[1].split("\n\n", 1)[0]
        documented = set(re.findall(r"`([a-z_]+)", paragraph))
        assert {k.rsplit(".", 1)[-1] for k in expected} <= documented, ("README", name)
    assert "**Notification emails**" in section


def test_the_example_config_is_valid(tmp_path, monkeypatch):
    from pathlib import Path

    from agent.config import load_config
    from agent.plugins import make_plugin_host as real_host

    root = Path(__file__).resolve().parent.parent
    text = (root / "configs" / "retainer.example.toml").read_text()
    (tmp_path / "mail").mkdir()
    config = tmp_path / "example.toml"
    config.write_text(text.replace("~/Mail/work", str(tmp_path / "mail")).replace(
        "~/.local/share/retainer", str(tmp_path / "data")))
    for name in ("RETAINER_IMAP_PASSWORD", "RETAINER_UPWORK_SECRET",
                 "RETAINER_FREELANCER_TOKEN"):
        monkeypatch.setenv(name, "x")
    loaded = load_config(config, real_host(), only={"inbox", "archive", "upwork-main",
                                                    "freelancer"})
    assert sorted(loaded.settings) == ["archive", "freelancer", "inbox", "upwork-main"]


def test_a_closed_pipe_ends_the_listing_quietly(tmp_path):
    items = [{"id": f"<m{i}@x>", "from": "maria@example.com", "subject": f"subject {i} " * 5}
             for i in range(1000)]
    config = make_config(tmp_path)
    feed.write_feed(tmp_path / "feed.jsonl", items)
    command = [sys.executable, "-m", "tests.support.feed_cli", "--config", str(config)]
    subprocess.run([*command, "sync"], check=True, capture_output=True, timeout=300)
    process = subprocess.Popen([*command, "messages"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"ID ")  # `retainer messages | head -1`
    process.stdout.close()
    assert process.wait(timeout=60) == 141
    assert process.stderr.read() == b""


def test_wide_characters_are_measured_as_the_terminal_shows_them(tmp_path):
    from agent.cli.output import cell_width

    assert cell_width("Kenji") == 5 and cell_width("山田太郎") == 8 and cell_width("Zoë") == 3
    config = make_config(tmp_path)
    run(config, "sync")
    run(config, "contractors", "add", "yamada@example.jp", "--name", "山田太郎デザイン事務所の山田さん",
        "--skill", "ロゴ", "--skill", "イラスト")
    out = invoke(config, "contractors", env={"COLUMNS": "80"}).stdout
    lines = out.splitlines()
    assert max(cell_width(line) for line in lines) <= 80
    last = lines[0].index("LAST")  # the header is ASCII: its index is its column
    for line in lines[1:]:  # every row's LAST cell starts in that same terminal column
        k = next(k for k in range(len(line) + 1) if cell_width(line[:k]) >= last)
        assert cell_width(line[:k]) == last and line[k - 1] == " " and line[k] != " ", line
        assert line[k:].startswith(("just now", "-")) or " ago" in line[k:k + 12], line


@pytest.mark.parametrize("columns", [None, "200", "60", "24"])
def test_a_table_given_by_columns_prints_what_the_rows_print(columns, monkeypatch, capsys):
    """`review` and `deliverables --unreviewed` build their tables column by column
    (table_columns): the same text as table() of the rows, cut, padded and dropped alike,
    whatever the cells (None, numbers, line breaks, wide characters, long text)."""
    from agent.cli.output import table, table_columns

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    rows = [("d_01", None, "Zoë Müller", "x" * 70, 12, "line\nbreak"),
            ("d_02", "3 h ago", "漢字テスト", "short", 3.5, ""),
            ("d_03", "12 d ago", "", "a" * 48, None, "ok")]
    headers = ["id", "received", Col("contractor", flex=2), Col("task", flex=3, drop=1),
               Col("size", right=True, drop=2), Col("status", flex=True)]
    for cells in (rows, rows[:1], []):
        table(cells, headers)
        by_rows = capsys.readouterr()
        table_columns([list(c) for c in zip(*cells, strict=True)] if cells
                      else [[] for _ in headers], headers)
        by_columns = capsys.readouterr()
        assert (by_columns.out, by_columns.err) == (by_rows.out, by_rows.err)
        assert by_rows.out.count("\n") == len(cells) + 1


def test_a_listing_in_process_leaves_the_garbage_collector_on(tmp_path):
    """Listings run without the cyclic collector (a fresh process that exits), but a
    caller of main() in the same process (a test, an embedding tool) gets it back."""
    import gc

    from agent.cli.root import main

    config = make_config(tmp_path)
    assert gc.isenabled()
    with pytest.raises(SystemExit):
        main(["--config", str(config), "status"])
    assert gc.isenabled()
