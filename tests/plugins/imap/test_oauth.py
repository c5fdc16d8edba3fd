"""OAuth 2.0 mail end to end on real servers: a Dovecot that takes only bearer tokens for
its users (SASL OAUTHBEARER and XOAUTH2, an oauth2 passdb asking the tests' OAuth server's
introspection endpoint), ``retainer auth`` with the browser step done by a small HTTP
client, ``retainer sync``, refresh, rotation, revocation, and SMTP AUTH XOAUTH2 for
``review --send``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.errors import AuthError
from agent.oauth import TokenStore
from plugins.imap.connector import ImapConnector
from plugins.imap.settings import ImapSettings
from tests.servers.dovecot import Dovecot, Mailbox
from tests.servers.oauth import OAuthServer, OAuthSmtp

from .util import context, corpus, make_message, run

pytestmark = pytest.mark.dovecot

BROWSER = '''#!{python}
"""The browser step of `retainer auth`: open the address and follow the redirects to the
loopback address Retainer listens on (the test OAuth server allows access at once)."""
import sys
import requests
answer = requests.get(sys.argv[-1], timeout=30)
sys.exit(0 if answer.ok else 1)
'''


def browser(tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "browser"
    script.write_text(BROWSER.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"BROWSER": str(script)}


def oauth_settings(mailbox: Mailbox, oauth: OAuthServer, *, device: bool = False,
                   **extra: Any) -> dict[str, Any]:
    values = mailbox.settings(**{**oauth.settings(), **extra})
    if not device:  # like Google: no device code for mail scopes
        values.pop("device_url", None)
    return values


def write_config(tmp_path: Path, mailbox: Mailbox, oauth: OAuthServer, *,
                 others: str = "", smtp: str = "", device: bool = False) -> Path:
    head = ["[agent]", f'data_dir = "{tmp_path / "data"}"', 'owner_emails = ["owner@example.com"]',
            "", "[[contractors]]", 'name = "Maria"', 'emails = ["maria@design.example"]', ""]
    values = oauth_settings(mailbox, oauth, device=device)
    source = mailbox.source_toml("inbox", **{k: v for k, v in values.items()
                                             if k not in ("host", "port", "security", "username")})
    config = tmp_path / "retainer.toml"
    config.write_text("\n".join(head) + source + smtp + others)
    return config


def retainer(config: Path, *args: str, env: dict[str, str] | None = None,
             expect: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "agent", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})
    assert done.returncode == expect, done.stdout + done.stderr
    return done


def stored(config: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json.loads(retainer(config, "messages", "--json").stdout)
    return docs


def logins(server: Dovecot, user: str) -> list[str]:
    """The SASL mechanisms of ``user``'s successful logins, from Dovecot's log (without
    the test helpers' own PLAIN logins that deliver the mail)."""
    found = []
    for line in server.log_path.read_text().splitlines():
        if f"Login: user=<{user}>" in line and "method=" in line:
            found.append(line.split("method=")[1].split(",")[0])
    return [m for m in found if m != "PLAIN"]


def connector(mailbox: Mailbox, oauth: OAuthServer, tmp_path: Path, *,
              cls: type[ImapConnector] = ImapConnector) -> ImapConnector:
    settings = ImapSettings.model_validate(oauth_settings(mailbox, oauth))
    return cls(settings, context(tmp_path))


def sign_in(mailbox: Mailbox, oauth: OAuthServer, tmp_path: Path) -> Path:
    """`retainer auth`'s work without the CLI: a loopback sign-in into the state folder."""
    import requests

    from agent.oauth import sign_in as do_sign_in

    settings = ImapSettings.model_validate(oauth_settings(mailbox, oauth))
    client = settings.oauth_client("inbox")
    assert client is not None
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    result = do_sign_in(client, state, say=lambda _: None, ask=lambda _: "",
                        browser=lambda url: requests.get(url, timeout=10).ok)
    assert result is not None
    return result.path


def test_auth_then_sync_through_the_cli(oauth_mailbox: Mailbox, oauth: OAuthServer,
                                        dovecot_oauth: Dovecot, tmp_path: Path) -> None:
    oauth_mailbox.append_many("INBOX", corpus(12))
    config = write_config(tmp_path, oauth_mailbox, oauth)
    before = retainer(config, "sync", expect=1)
    assert "not signed in yet; run `retainer auth inbox` first" in before.stderr

    done = retainer(config, "auth", "inbox", env=browser(tmp_path))
    assert "Signed in to" in done.stdout and "mode 0600" in done.stdout
    token_file = tmp_path / "data" / "sources" / "inbox" / "oauth-tokens.json"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.parent.stat().st_mode & 0o777 == 0o700
    tokens = json.loads(token_file.read_text())
    assert tokens["access_token"] not in done.stdout + done.stderr

    retainer(config, "sync")
    assert len(stored(config)) == 12
    assert logins(dovecot_oauth, oauth_mailbox.user) == ["OAUTHBEARER"]
    assert oauth.introspections() >= 1
    # nothing new: one more login with the same token, no refresh
    retainer(config, "sync")
    assert oauth.token_hits("refresh_token") == []


def test_auth_with_no_browser_takes_the_pasted_address(oauth_mailbox: Mailbox, oauth: OAuthServer,
                                                       tmp_path: Path) -> None:
    import requests

    config = write_config(tmp_path, oauth_mailbox, oauth)
    printed = retainer(config, "auth", "inbox", "--print-url").stdout
    url = next(line.strip() for line in printed.splitlines() if "/authorize?" in line)
    landed = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    done = retainer(config, "auth", "inbox", "--code", landed)
    assert "Signed in" in done.stdout
    retainer(config, "sync")


def test_no_browser_uses_the_device_code_where_the_provider_has_one(
        oauth_mailbox: Mailbox, oauth: OAuthServer, tmp_path: Path) -> None:
    """Like Microsoft: `retainer auth --no-browser` shows a code to enter elsewhere."""
    import re

    import requests

    oauth_mailbox.append_many("INBOX", corpus(2))
    config = write_config(tmp_path, oauth_mailbox, oauth, device=True)
    process = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(config), "auth",
                                "inbox", "--no-browser"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    shown = process.stdout.readline()
    found = re.search(r"open (\S+) and enter the code (\w+)", shown)
    assert found, shown
    # the owner types the code on their phone
    assert requests.get(found.group(1), params={"user_code": found.group(2)}, timeout=10).ok
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, out + err
    assert "Signed in" in out
    retainer(config, "sync")
    assert len(stored(config)) == 2


def test_xoauth2_when_that_is_the_mechanism_chosen(oauth_mailbox: Mailbox, oauth: OAuthServer,
                                                   dovecot_oauth: Dovecot, tmp_path: Path) -> None:
    class Xoauth2Only(ImapConnector):
        sasl_preference = ("XOAUTH2",)

    oauth_mailbox.append_many("INBOX", corpus(3))
    sign_in(oauth_mailbox, oauth, tmp_path)
    messages, _, _ = run(connector(oauth_mailbox, oauth, tmp_path, cls=Xoauth2Only), {})
    assert len(messages) == 3
    assert logins(dovecot_oauth, oauth_mailbox.user) == ["XOAUTH2"]


def test_expiring_token_is_refreshed_before_login_and_rotation_saved(
        oauth_mailbox: Mailbox, oauth: OAuthServer, tmp_path: Path) -> None:
    oauth_mailbox.append_many("INBOX", corpus(2))
    path = sign_in(oauth_mailbox, oauth, tmp_path)
    first = TokenStore(path.parent).load()
    assert first is not None

    class Later(ImapConnector):  # 2 minutes before the access token expires
        wall_clock = staticmethod(lambda: first.expires_at - 120)

    conn = connector(oauth_mailbox, oauth, tmp_path, cls=Later)
    messages, _, _ = run(conn, {})
    assert len(messages) == 2
    saved = TokenStore(path.parent).load()
    assert saved is not None and saved.refresh_token != first.refresh_token
    assert oauth.live_refresh_tokens(oauth_mailbox.user) == {saved.refresh_token}
    assert [h.status for h in oauth.token_hits("refresh_token")] == [200]


def test_token_refused_by_the_server_is_refreshed_once(oauth_mailbox: Mailbox, oauth: OAuthServer,
                                                       tmp_path: Path) -> None:
    oauth_mailbox.append_many("INBOX", corpus(2))
    sign_in(oauth_mailbox, oauth, tmp_path)
    oauth.expire_access_tokens()  # the local expiry still says valid; Dovecot says no
    messages, _, _ = run(connector(oauth_mailbox, oauth, tmp_path), {})
    assert len(messages) == 2
    assert len(oauth.token_hits("refresh_token")) == 1


def test_revoked_grant_fails_that_source_only_and_loses_nothing(
        oauth_mailbox: Mailbox, oauth: OAuthServer, dovecot_oauth: Dovecot,
        tmp_path: Path) -> None:
    other = dovecot_oauth.add_user()  # a password mailbox on the same server
    other.append("INBOX", make_message(100, message_id="<other-1@test.example>"))
    oauth_mailbox.append_many("INBOX", corpus(4))
    config = write_config(tmp_path, oauth_mailbox, oauth,
                          others=other.source_toml("other", folders=["INBOX"]))
    env = {**browser(tmp_path), **other.env()}
    retainer(config, "auth", "inbox", env=env)
    retainer(config, "sync", env=env)
    assert len(stored_env(config, env)) == 5

    assert oauth.revoke_user(oauth_mailbox.user) == 1
    oauth.expire_access_tokens()
    oauth_mailbox.append("INBOX", make_message(50, message_id="<after-revoke@test.example>"))
    other.append("INBOX", make_message(101, message_id="<other-2@test.example>"))
    failed = retainer(config, "sync", env=env, expect=1)
    assert "inbox: failed (auth)" in failed.stdout and "retainer: error: inbox: " in failed.stderr
    assert "run `retainer auth inbox`" in failed.stderr
    assert "at-" not in failed.stderr and "rt-" not in failed.stderr
    messages = stored_env(config, env)
    assert len(messages) == 6  # the other source synced; the inbox kept what it had
    status = json.loads(retainer(config, "status", "--json", env=env).stdout)
    assert "retainer auth inbox" in json.dumps(status)

    retainer(config, "auth", "inbox", env=env)
    retainer(config, "sync", env=env)
    ids = [m.get("message_id") or m.get("remote_id") for m in stored_env(config, env)]
    assert len(ids) == 7 and len(set(ids)) == 7  # the new one, nothing twice


def stored_env(config: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json.loads(retainer(config, "messages", "--json", env=env).stdout)
    return docs


def test_not_an_oauth_source(oauth_mailbox: Mailbox, oauth: OAuthServer, dovecot_oauth: Dovecot,
                             tmp_path: Path) -> None:
    config = tmp_path / "retainer.toml"
    config.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n'
                      + oauth_mailbox.source_toml("plain"))
    done = retainer(config, "auth", "plain", env=oauth_mailbox.env(), expect=1)
    assert 'does not sign in with OAuth 2.0 (set auth = "oauth2"' in done.stderr


def test_send_over_smtp_with_the_same_token(oauth_mailbox: Mailbox, oauth: OAuthServer,
                                            dovecot_oauth: Dovecot, tmp_path: Path) -> None:
    """``review --send`` through SMTP AUTH XOAUTH2 (the only mechanism the server offers)."""
    from email import message_from_bytes

    from tests.support.workflow_mail import CONFIG, OWNER, mailbox_messages

    oauth_mailbox.create_folder("Sent")
    for folder, _name, raw in mailbox_messages():
        oauth_mailbox.append(folder or "INBOX", raw)
    key = dovecot_oauth.root / "etc" / "key.pem"
    with OAuthSmtp(oauth, dovecot_oauth.cert, key) as sink:
        head = CONFIG[:CONFIG.index("[[sources]]")].format(data=tmp_path / "data", owner=OWNER)
        source = oauth_mailbox.source_toml(
            "inbox", folders=["INBOX", "Sent"],
            **{k: v for k, v in oauth_settings(oauth_mailbox, oauth).items()
               if k not in ("host", "port", "security", "username", "folders")})
        smtp = (f'[sources.settings.smtp]\nhost = "127.0.0.1"\nport = {sink.port}\n'
                f'security = "starttls"\nca_file = "{dovecot_oauth.cert}"\n')
        config = tmp_path / "config.toml"
        config.write_text(head + source + smtp)
        env = browser(tmp_path)
        retainer(config, "auth", "inbox", env=env)
        retainer(config, "sync")
        rows = json.loads(retainer(config, "review", "--json").stdout)
        oauth.expire_access_tokens()  # sending refreshes, then signs in
        retainer(config, "review", "changes", rows[1]["id"], "--rating", "3", "--feedback",
                 "Shorter intro, please.", "--send", "--yes")
    assert [ok for _, ok in sink.logins] == [False, True]  # refused, refreshed, accepted
    assert {user for user, _ in sink.logins} == {oauth_mailbox.user}
    assert len(sink.messages) == 1
    msg = message_from_bytes(sink.messages[0][2])
    assert msg["To"] == "Sam Chen <sam@example.com>"
    assert msg["In-Reply-To"] == "<work-t4@example.com>"


def test_revoked_grant_stops_sync_and_send_with_the_auth_hint(
        oauth_mailbox: Mailbox, oauth: OAuthServer, dovecot_oauth: Dovecot, tmp_path: Path) -> None:
    from agent.models import Identity, Outgoing

    sign_in(oauth_mailbox, oauth, tmp_path)
    oauth.revoke_user(oauth_mailbox.user)
    oauth.expire_access_tokens()
    with pytest.raises(AuthError, match=r"run `retainer auth inbox`"):
        run(connector(oauth_mailbox, oauth, tmp_path), {})
    key = dovecot_oauth.root / "etc" / "key.pem"
    with OAuthSmtp(oauth, dovecot_oauth.cert, key) as sink:
        settings = ImapSettings.model_validate({
            **oauth_settings(oauth_mailbox, oauth),
            "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "starttls",
                     "ca_file": str(dovecot_oauth.cert)}})
        sender = ImapConnector(settings, context(tmp_path))
        outgoing = Outgoing(to=Identity(platform="email", address="sam@example.com"),
                            subject="x", text="y")
        with pytest.raises(AuthError, match=r"run `retainer auth inbox`"):
            sender.send(outgoing)
    assert sink.messages == []


def test_signed_in_as_another_account_says_so(oauth_mailbox: Mailbox, oauth: OAuthServer,
                                              tmp_path: Path) -> None:
    class Xoauth2Only(ImapConnector):  # Dovecot answers a failed XOAUTH2 4 s sooner
        sasl_preference = ("XOAUTH2",)

    oauth.login_as = "somebody-else"  # the owner picked the wrong account in the browser
    sign_in(oauth_mailbox, oauth, tmp_path)
    with pytest.raises(AuthError, match=r"even with a fresh token; check that username is the "
                                        r"signed-in account.*retainer auth inbox"):
        run(connector(oauth_mailbox, oauth, tmp_path, cls=Xoauth2Only), {})
    assert len(oauth.token_hits("refresh_token")) == 1  # one refresh, then it gave up


def test_smtp_refusing_a_fresh_token_names_the_source(oauth_mailbox: Mailbox, oauth: OAuthServer,
                                                      dovecot_oauth: Dovecot, tmp_path: Path) -> None:
    from agent.models import Identity, Outgoing

    oauth.login_as = "somebody-else"
    sign_in(oauth_mailbox, oauth, tmp_path)
    key = dovecot_oauth.root / "etc" / "key.pem"
    with OAuthSmtp(oauth, dovecot_oauth.cert, key) as sink:
        settings = ImapSettings.model_validate({
            **oauth_settings(oauth_mailbox, oauth),
            "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "starttls",
                     "ca_file": str(dovecot_oauth.cert)}})
        sender = ImapConnector(settings, context(tmp_path))
        outgoing = Outgoing(to=Identity(platform="email", address="sam@example.com"),
                            subject="x", text="y")
        with pytest.raises(AuthError, match=r"refused the OAuth 2\.0 sign-in.*retainer auth inbox"):
            sender.send(outgoing)
    assert sink.logins == [(oauth_mailbox.user, False), (oauth_mailbox.user, False)]
    assert sink.messages == []
