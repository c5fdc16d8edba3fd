"""Reminders through real endpoints: a webhook server and an SMTP server on 127.0.0.1, and
a notify-send stand-in; failing notifiers never stop the daemon."""

from __future__ import annotations

import json
import socket
import stat
import threading
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from agent.config import load_config
from agent.plugins import make_plugin_host
from agent.scheduler import Daemon
from agent.store import Store
from agent.sync import SyncEngine
from tests.support.workflow_mail import TASKS, host_plugins, make_workflow_config, run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(Hook.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The webhook URL is a secret: the config names it as { env = "RETAINER_TEST_HOOK" }."""
    Hook.received = []
    Hook.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RETAINER_TEST_HOOK", f"http://127.0.0.1:{server.server_address[1]}/hook")
    yield '{ env = "RETAINER_TEST_HOOK" }'
    server.shutdown()
    server.server_close()


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Sink]]:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, sink
    controller.stop()


def config_with(tmp_path: Path, notifiers: str) -> Path:
    config = make_workflow_config(tmp_path, extra=notifiers)
    run(config, "sync")
    return config


def test_webhook_gets_slack_compatible_json_once(tmp_path: Path, webhook: str) -> None:
    config = config_with(tmp_path, f'[[notifiers]]\ntype = "webhook"\nurl = {webhook}\n')
    results = json.loads(run(config, "notify", "--json").stdout)
    assert results[0]["error"] == ""
    assert len(Hook.received) == 1
    payload = Hook.received[0]
    assert "waiting for your review" in payload["text"]
    kinds = [e["kind"] for e in payload["retainer"]]
    assert kinds.count("overdue") == 1 and kinds.count("report") == 1
    assert kinds.count("waiting") == len(TASKS)  # every delivery is still unanswered
    overdue = next(e for e in payload["retainer"] if e["kind"] == "overdue")
    assert len(overdue["deliverables"]) == len(TASKS) - 1
    # sent once: a second run has nothing new
    again = json.loads(run(config, "notify", "--json").stdout)
    assert again[0]["sent"] == [] and len(Hook.received) == 1
    assert "nothing due" in run(config, "notify").stdout


def test_webhook_failure_is_reported_and_retried(tmp_path: Path, webhook: str) -> None:
    config = config_with(tmp_path, f'[[notifiers]]\ntype = "webhook"\nurl = {webhook}\n'
                         'events = ["overdue"]\n')
    Hook.status = 500
    failed = run(config, "notify", expect=1).stdout
    assert "FAILED" in failed and "HTTP 500" in failed
    Hook.status = 200
    ok = json.loads(run(config, "notify", "--json").stdout)
    assert ok[0]["error"] == "" and len(ok[0]["sent"]) == 1
    assert len(Hook.received) == 2


def test_email_digest_arrives_over_smtp(tmp_path: Path, smtp: tuple[int, Sink]) -> None:
    port, sink = smtp
    config = config_with(tmp_path, f"""
[[notifiers]]
type = "email"
host = "127.0.0.1"
port = {port}
security = "none"
from = "retainer@example.com"
to = ["owner@example.com"]
events = ["overdue", "report"]
""")
    out = run(config, "notify").stdout
    assert "sent: overdue:" in out
    assert len(sink.messages) == 1
    mail_from, rcpts, raw = sink.messages[0]
    assert mail_from == "retainer@example.com" and rcpts == ["owner@example.com"]
    msg = message_from_bytes(raw)
    assert msg["Subject"] == "Retainer: 2 reminders"
    body = msg.get_payload(decode=True).decode()
    assert "logo-spring.png from Maria Lopez" in body and "Delegation report" in body


def test_plain_smtp_to_a_remote_host_is_refused(tmp_path: Path) -> None:
    config = config_with(tmp_path, """
[[notifiers]]
type = "email"
host = "smtp.example.com"
security = "none"
from = "r@example.com"
to = ["owner@example.com"]
""")
    out = run(config, "notify", expect=1).stdout
    assert "only allowed for a server on this machine" in out


def test_desktop_notification_and_bad_config(tmp_path: Path) -> None:
    log = tmp_path / "notified.txt"
    script = tmp_path / "notify-send"
    script.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> {log}\necho "<end>" >> {log}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    config = config_with(tmp_path, f'[[notifiers]]\ntype = "desktop"\ncommand = "{script}"\n'
                         'events = ["overdue"]\n')
    run(config, "notify")
    calls = log.read_text().split("<end>")[:-1]
    assert len(calls) == 1
    assert calls[0].startswith("--app-name=Retainer|6 deliverables waiting for your review|")
    assert "logo-spring.png from Maria Lopez" in calls[0]
    bad = tmp_path / "bad"
    bad.mkdir()
    config = make_workflow_config(bad, extra='[[notifiers]]\ntype = "pager"\n')
    assert "notifiers[0]: type" in run(config, "sync", expect=1).output  # refused up front
    out = run(config, "notify", expect=1).output
    assert "type must be one of desktop, email, webhook" in out


def test_a_failing_notifier_never_stops_the_daemon(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAINER_DEAD_HOOK", f"http://127.0.0.1:{free_port()}/nobody-listens")
    config_path = config_with(tmp_path, '[[notifiers]]\ntype = "webhook"\n'
                              'url = { env = "RETAINER_DEAD_HOOK" }\ntimeout = 2\n')
    host = make_plugin_host(entrypoints=False, extra=host_plugins())
    config = load_config(config_path, host)
    store = Store(config.data_dir)
    daemon = Daemon(SyncEngine(config, host, store))
    daemon.schedule_sources()
    daemon.schedule_notifiers()
    assert [sorted(j.tags) for j in daemon.scheduler.jobs].count(["notifiers"]) == 1
    daemon.notify_job()  # the webhook is down: logged, not raised
    daemon.run_job(config.source("mail"))
    daemon.join_workers(60)  # the sync runs in its own worker process
    assert daemon.runs == {"mail": 1}
    assert store.source_state("mail").get("last_error") in (None, "")


# -- the builtin notifiers are a plugin like any other -------------------------------------------


def test_builtin_notifiers_come_through_the_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    host = make_plugin_host()
    assert {k: host.notifier_owner[k] for k in ("desktop", "email", "webhook")} == {
        "desktop": "notifiers", "email": "notifiers", "webhook": "notifiers"}
    assert "register_notifiers" in host.infos["notifiers"].hooks
    monkeypatch.setenv("RETAINER_DISABLE_PLUGINS", "notifiers")
    without = make_plugin_host()
    assert not set(without.notifiers) & {"desktop", "email", "webhook"}
    from agent.errors import ConfigError
    from agent.notify import build_notifiers

    with pytest.raises(ConfigError, match="is the builtin `notifiers` plugin disabled"):
        build_notifiers([{"type": "desktop"}], without)


def test_a_notifier_name_taken_twice_names_both_plugins() -> None:
    import plugins.notifiers
    from agent.errors import PluginError
    from agent.notify import Event, Notifier
    from agent.plugins import hookimpl

    class LoudEmail(Notifier):
        def send(self, events: list[Event]) -> None:
            raise AssertionError("never chosen")

    class Rival:
        __name__ = "rival"

        @hookimpl
        def register_notifiers(self, register: Any) -> None:
            register("email", LoudEmail)
            register("sms", LoudEmail)

    host = make_plugin_host(entrypoints=False, extra=[plugins.notifiers, Rival()])
    assert host.notifiers["email"] is plugins.notifiers.EmailNotifier  # not replaced
    assert host.notifiers["sms"] is LoudEmail  # its other names still count
    assert host.infos["rival"].error == ('notifier "email" is already provided by plugin '
                                         '"notifiers"; disable one of "notifiers" and "rival"')
    with pytest.raises(PluginError, match='notifier "email" is already provided by plugin'):
        make_plugin_host(entrypoints=False, strict=True, extra=[plugins.notifiers, Rival()])

    class NotANotifier:
        __name__ = "wrong"

        @hookimpl
        def register_notifiers(self, register: Any) -> None:
            register("pager", dict)

    host = make_plugin_host(entrypoints=False, extra=[NotANotifier()])
    assert "subclass of agent.notify.Notifier" in host.infos["wrong"].error
    assert "pager" not in host.notifiers
