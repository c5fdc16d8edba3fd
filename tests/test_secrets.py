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
