from __future__ import annotations

import sys

import pytest
from pydantic import BaseModel, ValidationError

from agent.errors import SecretError
from agent.secrets import Secret, resolve_secret


class Model(BaseModel):
    password: Secret


def test_env_secret(monkeypatch):
    monkeypatch.setenv("RETAINER_TEST_SECRET", "CANARY-1234")
    model = Model.model_validate({"password": {"env": "RETAINER_TEST_SECRET"}})
    assert model.password.get_secret_value() == "CANARY-1234"
    assert "CANARY" not in repr(model) and "CANARY" not in model.model_dump_json()


def test_command_secret():
    ref = {"command": [sys.executable, "-c", "print('from-command')"]}
    assert resolve_secret(ref) == "from-command"


def test_inline_secret_is_refused():
    with pytest.raises(ValidationError, match="never written inline"):
        Model.model_validate({"password": "hunter2"})


def test_missing_env_names_variable(monkeypatch):
    monkeypatch.delenv("RETAINER_NOPE", raising=False)
    with pytest.raises(SecretError, match="RETAINER_NOPE is not set"):
        resolve_secret({"env": "RETAINER_NOPE"})


def test_failing_command_does_not_echo_output():
    ref = {"command": [sys.executable, "-c", "import sys; print('SECRET'); sys.exit(3)"]}
    with pytest.raises(SecretError) as err:
        resolve_secret(ref)
    assert "exited with 3" in str(err.value) and "SECRET" not in str(err.value)


def test_resolved_secrets_are_scrubbed_from_logs(monkeypatch, capsys):
    import logging

    from agent.cli import setup_logging

    monkeypatch.setenv("RETAINER_TEST_CANARY", "CANARY-TOKEN-9876")
    Model.model_validate({"password": {"env": "RETAINER_TEST_CANARY"}})
    setup_logging(1)
    log = logging.getLogger("retainer.plugins.test")
    log.error("login failed with %s", "CANARY-TOKEN-9876")
    try:
        raise RuntimeError("token CANARY-TOKEN-9876 refused")
    except RuntimeError:
        log.exception("boom")
    err = capsys.readouterr().err
    assert "CANARY" not in err and "login failed with ***" in err and "token *** refused" in err


def test_secret_url_is_scrubbed_in_part(monkeypatch):
    from agent.secrets import scrub

    url = "https://hooks.example.com/services/T0CANARY1/B0CANARY2/xCanaryToken42?sig=Q1w2E3r4"
    monkeypatch.setenv("RETAINER_TEST_WEBHOOK", url)
    Model.model_validate({"password": {"env": "RETAINER_TEST_WEBHOOK"}})
    leaks = [
        f"POST {url} failed",
        "Max retries exceeded with url: /services/T0CANARY1/B0CANARY2/xCanaryToken42?sig=Q1w2E3r4",
        "hooks.example.com/services/T0CANARY1/B0CANARY2/xCanaryToken42",
        "url: /services/T0CANARY1/B0CANARY2/xCanaryToken42 (Caused by x)",
        "%2Fservices%2FT0CANARY1 and xCanaryToken42 alone",
        "query sig=Q1w2E3r4",
    ]
    for text in leaks:
        out = scrub(text)
        for part in ("CANARY", "Canary", "Q1w2E3r4"):
            assert part not in out, (text, out)
    assert scrub("the services page of hooks.example.com") == \
        "the services page of hooks.example.com"  # plain words and the host stay readable


def test_webhook_failure_does_not_print_the_url(tmp_path, monkeypatch):
    import socket

    from agent.errors import RetainerError
    from agent.notify import WebhookNotifier, WebhookSettings

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T0CANARY9/B0CANARY8/yCanaryTok77"
    monkeypatch.setenv("RETAINER_TEST_WEBHOOK", url)
    settings = WebhookSettings.model_validate(
        {"type": "webhook", "url": {"env": "RETAINER_TEST_WEBHOOK"}, "timeout": 2})
    with pytest.raises(RetainerError) as info:
        WebhookNotifier(settings).send([])
    assert "CANARY" not in str(info.value) and "127.0.0.1" in str(info.value)
