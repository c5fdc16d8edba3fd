from __future__ import annotations

import os
import secrets as secrets_module
import sys

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends.fail import Keyring as FailKeyring
from pydantic import BaseModel, SecretStr, ValidationError

import agent.secrets
from agent.errors import SecretError
from agent.secrets import Secret, known_secrets, resolve_secret, scrub


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
    assert str(err.value) == (f"secret command {sys.executable!r} exited with 3; "
                              "run it by hand to see why")


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


# -- every reference kind, and the errors that say what to do -------------------------

CANARY = "Wq7z"  # four characters: the shortest secret that is scrubbed
ONE_KEY = "a secret must be a table with one key: env, command or keyring"
ENV_NAME = "{ env = ... } takes the name of an environment variable"
COMMAND_LIST = '{ command = [...] } takes a list of strings, e.g. ["pass", "x"]'
KEYRING_KEYS = "{ keyring = { service = ..., username = ... } } needs both keys"


def fresh_canary() -> str:
    """Four characters never resolved before in this process (known secrets are global)."""
    while True:
        value = secrets_module.token_urlsafe(3)
        if value not in known_secrets():
            return value


@pytest.mark.parametrize(("ref", "message"), [
    ({}, ONE_KEY),
    ({"env": "A", "command": ["x"]}, ONE_KEY),  # two keys: which one would win?
    (["env", "A"], ONE_KEY),
    (42, ONE_KEY),
    ({"env": ""}, ENV_NAME),
    ({"env": ["A"]}, ENV_NAME),
    ({"command": []}, COMMAND_LIST),
    ({"command": "pass show x"}, COMMAND_LIST),
    ({"command": ["pass", 3]}, COMMAND_LIST),
    ({"keyring": "svc"}, KEYRING_KEYS),
    ({"keyring": {"service": "svc"}}, KEYRING_KEYS),
    ({"keyring": {"username": "me"}}, KEYRING_KEYS),
    ({"vault": "x"}, "unknown secret kind 'vault': use env, command or keyring"),
])
def test_malformed_references_are_refused(ref, message):
    with pytest.raises(SecretError) as err:
        resolve_secret(ref)
    assert str(err.value) == message


def test_inline_refusal_explains_every_form():
    with pytest.raises(SecretError) as err:
        resolve_secret("hunter2")
    assert str(err.value) == (
        'secrets are never written inline; use { env = "NAME" }, '
        '{ command = ["pass", "show", "x"] } or { keyring = { service = "...", '
        'username = "..." } }')


def test_env_secret_value_and_secretstr_passthrough(monkeypatch):
    monkeypatch.setenv("RETAINER_TEST_SECRET", CANARY)
    assert resolve_secret({"env": "RETAINER_TEST_SECRET"}) == CANARY
    monkeypatch.setenv("RETAINER_TEST_SECRET", "")
    assert resolve_secret({"env": "RETAINER_TEST_SECRET"}) == ""  # set but empty is a value
    assert resolve_secret(SecretStr("already")) == "already"


def test_command_output_first_line_only():
    ref = {"command": [sys.executable, "-c", "print('line-one'); print('line-two')"]}
    assert resolve_secret(ref) == "line-one"
    assert resolve_secret({"command": [sys.executable, "-c", "pass"]}) == ""
    raw = {"command": [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'ab\\xffc')"]}
    assert resolve_secret(raw) == "ab\ufffdc"


def test_command_that_cannot_start_names_it():
    with pytest.raises(SecretError, match=r"secret command '/nonexistent/pass' could not run: "
                                          r"FileNotFoundError"):
        resolve_secret({"command": ["/nonexistent/pass", "show"]})


def test_command_that_would_prompt_gets_no_terminal(monkeypatch):
    """stdin is closed: `pass`/gpg asking for a passphrase fails at once instead of waiting."""
    reader, writer = os.pipe()  # a stdin that never ends, as a terminal would be
    saved = os.dup(0)
    os.dup2(reader, 0)
    monkeypatch.setattr(agent.secrets, "COMMAND_TIMEOUT", 20)
    try:
        ref = {"command": [sys.executable, "-c",
                           "import sys; data = sys.stdin.read(); print('closed' if data == '' else 'x')"]}
        assert resolve_secret(ref) == "closed"
        prompt = {"command": [sys.executable, "-c", "print(input('Passphrase: '))"]}
        with pytest.raises(SecretError, match=r"exited with 1; run it by hand to see why"):
            resolve_secret(prompt)
    finally:
        os.dup2(saved, 0)
        for fd in (saved, reader, writer):
            os.close(fd)


def test_command_that_hangs_is_cut_off(monkeypatch):
    monkeypatch.setattr(agent.secrets, "COMMAND_TIMEOUT", 1)
    ref = {"command": [sys.executable, "-c", "import time; time.sleep(120)"]}
    with pytest.raises(SecretError) as err:
        resolve_secret(ref)
    assert str(err.value) == f"secret command {sys.executable!r} could not run: TimeoutExpired"


def test_default_command_timeout_is_bounded():
    assert 0 < agent.secrets.COMMAND_TIMEOUT <= 60


# -- keyring, with a backend made for tests -------------------------------------------

class MemoryKeyring(KeyringBackend):
    """A real keyring backend that keeps its entries in a dict."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


@pytest.fixture
def memory_keyring():
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_keyring_secret(memory_keyring):
    keyring.set_password("retainer-imap", "me@example.com", "kr-" + CANARY)
    keyring.set_password("retainer-imap", "other@example.com", "not-this-one")
    ref = {"keyring": {"service": "retainer-imap", "username": "me@example.com"}}
    assert resolve_secret(ref) == "kr-" + CANARY
    model = Model.model_validate({"password": ref})
    assert model.password.get_secret_value() == "kr-" + CANARY
    assert "kr-" + CANARY in known_secrets()


def test_keyring_missing_entry(memory_keyring):
    ref = {"keyring": {"service": "retainer-imap", "username": "nobody"}}
    with pytest.raises(SecretError, match=r"no keyring entry for service 'retainer-imap'"):
        resolve_secret(ref)


def test_keyring_unavailable_suggests_env_or_command():
    previous = keyring.get_keyring()
    keyring.set_keyring(FailKeyring())
    try:
        with pytest.raises(SecretError) as err:
            resolve_secret({"keyring": {"service": "s", "username": "u"}})
    finally:
        keyring.set_keyring(previous)
    assert str(err.value) == ("the system keyring is not available (NoKeyringError); "
                              "use { env = ... } or { command = [...] } instead")


def test_keyring_package_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "keyring", None)
    with pytest.raises(SecretError) as err:
        resolve_secret({"keyring": {"service": "s", "username": "u"}})
    assert str(err.value) == ("keyring secrets need the keyring package: "
                              "pip install 'retainer[keyring]'")


# -- scrubbing ----------------------------------------------------------------------

def test_four_character_secret_is_scrubbed_everywhere(monkeypatch):
    canary, other = fresh_canary(), fresh_canary() + "z"
    monkeypatch.setenv("RETAINER_TEST_CANARY4", canary)
    monkeypatch.setenv("RETAINER_TEST_CANARY5", other)
    Model.model_validate({"password": {"env": "RETAINER_TEST_CANARY4"}})
    Model.model_validate({"password": {"env": "RETAINER_TEST_CANARY5"}})
    assert {canary, other} <= known_secrets()
    text = scrub(f"a {canary} b {canary} c {other}.")
    assert text == "a *** b *** c ***."
    assert scrub("nothing secret") == "nothing secret"


def test_validation_error_carries_the_secret_error_text(monkeypatch):
    monkeypatch.delenv("RETAINER_NOPE", raising=False)
    with pytest.raises(ValidationError) as err:
        Model.model_validate({"password": {"env": "RETAINER_NOPE"}})
    assert "environment variable RETAINER_NOPE is not set; export it first" in str(err.value)

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
    from plugins.notifiers import WebhookNotifier, WebhookSettings

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


@pytest.mark.parametrize(("piece", "token"), [
    ("T0CANARY1", True),  # a digit
    ("xCanaryToken", True),  # mixed case
    ("abcdefghijklmnop", True),  # 16 letters: long enough to be random
    ("abc1ef", True),  # six characters with a digit: the shortest token
    ("abc1e", False),  # five: too short whatever it holds
    ("services", False), ("SERVICES", False), ("abcdefghijklmno", False),  # words
    ("", False),
])
def test_token_like_pieces(piece, token):
    assert agent.secrets._token_like(piece) is token


def test_secret_parts_of_a_url():
    from agent.secrets import secret_parts

    url = "https://hooks.example.com/services/T0AB12/xYzWq/?sig=Q1w2E3&v=words&t=%2Fa%2Fb12345"
    assert secret_parts(url) == {
        url,
        "/services/T0AB12/xYzWq/?sig=Q1w2E3&v=words&t=%2Fa%2Fb12345",  # path and query
        "/services/T0AB12/xYzWq/?sig=Q1w2E3&v=words&t=/a/b12345",  # ... %-decoded
        "hooks.example.com/services/T0AB12/xYzWq/?sig=Q1w2E3&v=words&t=%2Fa%2Fb12345",
        "hooks.example.com/services/T0AB12/xYzWq/?sig=Q1w2E3&v=words&t=/a/b12345",
        "https://hooks.example.com/services/T0AB12/xYzWq/?sig=Q1w2E3&v=words&t=/a/b12345",
        "/services/T0AB12/xYzWq/?", "/services/T0AB12/xYzWq",  # the path as printed
        "T0AB12", "Q1w2E3", "%2Fa%2Fb12345", "/a/b12345",  # tokens, not words
        "sig=Q1w2E3&v=words&t=%2Fa%2Fb12345", "sig=Q1w2E3&v=words&t=/a/b12345",
    }
    assert secret_parts("https://example.com/") == {"https://example.com/"}  # no path
    assert secret_parts("https://example.com") == {"https://example.com"}
    assert secret_parts("https://example.com/?k=1") == {
        "https://example.com/?k=1", "/?k=1", "example.com/?k=1"}  # "k=1": too short
    assert secret_parts("https://example.com/ab/") == {
        "https://example.com/ab/", "/ab/", "example.com/ab/"}  # "/ab", "ab": too short
    assert secret_parts("not-a-url-Secret9") == {"not-a-url-Secret9"}
    assert secret_parts("http://[::1/x12345") == {"http://[::1/x12345"}  # unparsable


def test_scrub_replaces_the_longest_part_first(monkeypatch):
    monkeypatch.setattr(agent.secrets, "_KNOWN", set())
    monkeypatch.setattr(agent.secrets, "_PARTS", [])
    agent.secrets._remember("https://h.example/p/Tok3n9x")
    agent.secrets._remember("https://h.example/p/Tok3n9x")  # once is enough
    assert agent.secrets.known_secrets() == {"https://h.example/p/Tok3n9x"}
    assert sorted(agent.secrets._PARTS, key=len, reverse=True) == agent.secrets._PARTS
    assert scrub("GET https://h.example/p/Tok3n9x") == "GET ***"  # whole, not piece by piece
    assert scrub("at /p/Tok3n9x now") == "at *** now"
    assert scrub("h.example/p/ is fine") == "h.example/p/ is fine"


def test_a_padded_base64_query_value_is_scrubbed_alone(monkeypatch):
    monkeypatch.setattr(agent.secrets, "_KNOWN", set())
    monkeypatch.setattr(agent.secrets, "_PARTS", [])
    agent.secrets._remember("https://example.com/hook?sig=Q1w2E3r4==&v=1")
    assert scrub("signature Q1w2E3r4== refused") == "signature *** refused"
