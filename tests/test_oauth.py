"""The shared OAuth 2.0 module against the tests' OAuth server (tests/servers/oauth.py):
sign-in with PKCE and a loopback redirect, the pasted redirect, the device code, refresh
before expiry, refresh-token rotation saved before use, revocation."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
import requests

from agent.errors import AuthError
from agent.oauth import (
    PENDING_FILE,
    OAuthClient,
    Provider,
    TokenManager,
    TokenStore,
    choose_mechanism,
    oauthbearer,
    sign_in,
    xoauth2,
)
from tests.servers.oauth import CLIENT_SECRET, CONFIDENTIAL_CLIENT, PUBLIC_CLIENT, OAuthServer


def client(server: OAuthServer, *, client_id: str = PUBLIC_CLIENT, secret: str | None = None,
           device: bool = False, source: str = "inbox") -> OAuthClient:
    base = server.base_url
    provider = Provider("custom", "Test OAuth", authorize_url=f"{base}/authorize",
                        token_url=f"{base}/token", scopes=("imap", "offline_access"),
                        device_url=f"{base}/devicecode" if device else None)
    return OAuthClient(source=source, provider=provider, client_id=client_id,
                       client_secret=secret, timeout=10)


def browser(url: str) -> bool:
    """What a browser does: open the address, follow the redirect to the loopback."""
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    assert "You can close this window" in answer.text
    return True


def land(url: str) -> str:
    """A browser on another machine: the address it lands on (nothing listens there)."""
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def signed_in(server: OAuthServer, state_dir: Path, **kwargs: object) -> TokenManager:
    oauth_client = client(server, **kwargs)  # type: ignore[arg-type]
    result = sign_in(oauth_client, state_dir, say=lambda _: None, ask=lambda _: "",
                     browser=browser)
    assert result is not None
    return TokenManager(oauth_client, state_dir)


def test_loopback_sign_in_with_pkce_saves_tokens_0600(oauth: OAuthServer, tmp_path: Path) -> None:
    said: list[str] = []
    result = sign_in(client(oauth), tmp_path, say=said.append, ask=lambda _: "", browser=browser)
    assert result is not None
    assert result.path == tmp_path / "oauth-tokens.json"
    assert result.path.stat().st_mode & 0o777 == 0o600
    saved = json.loads(result.path.read_text())
    assert oauth.introspect(saved["access_token"])["username"] == oauth.login_as
    assert saved["refresh_token"] in oauth.live_refresh_tokens(oauth.login_as)
    authorize = next(line for line in said if "/authorize?" in line)
    assert "code_challenge_method=S256" in authorize and "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in authorize
    assert saved["access_token"] not in "".join(said)
    grant = oauth.token_hits("authorization_code")[-1]
    assert grant.status == 200  # the server checked the PKCE verifier


def test_a_confidential_client_sends_its_secret(oauth: OAuthServer, tmp_path: Path) -> None:
    wrong = client(oauth, client_id=CONFIDENTIAL_CLIENT, secret="wrong")
    with pytest.raises(AuthError, match="client id or secret"):
        sign_in(wrong, tmp_path, say=lambda _: None, ask=lambda _: "", browser=browser)
    right = client(oauth, client_id=CONFIDENTIAL_CLIENT, secret=CLIENT_SECRET)
    assert sign_in(right, tmp_path, say=lambda _: None, ask=lambda _: "", browser=browser)


def test_no_browser_prints_the_address_and_takes_the_pasted_redirect(
        oauth: OAuthServer, tmp_path: Path) -> None:
    said: list[str] = []
    pasted: list[str] = []

    def ask(prompt: str) -> str:
        url = next(line.strip() for line in said if "/authorize?" in line)
        pasted.append(land(url))
        return pasted[-1]

    opened: list[str] = []
    result = sign_in(client(oauth), tmp_path, say=said.append, ask=ask, no_browser=True,
                     browser=lambda url: bool(opened.append(url)))
    assert result is not None and opened == []  # --no-browser: nothing was opened
    assert pasted[0].startswith("http://127.0.0.1:") and "code=" in pasted[0]


def test_print_url_then_code_in_two_runs_and_state_checked(oauth: OAuthServer, tmp_path: Path) -> None:
    said: list[str] = []
    assert sign_in(client(oauth), tmp_path, say=said.append, ask=lambda _: "", print_url=True) is None
    assert (tmp_path / PENDING_FILE).stat().st_mode & 0o777 == 0o600
    landed = land(next(line.strip() for line in said if "/authorize?" in line))
    forged = landed.replace("state=", "state=x")
    with pytest.raises(AuthError, match="does not match"):
        sign_in(client(oauth), tmp_path, say=said.append, ask=lambda _: "", code=forged)
    assert sign_in(client(oauth), tmp_path, say=said.append, ask=lambda _: "", code=landed)
    with pytest.raises(AuthError, match="single-use"):
        sign_in(client(oauth), tmp_path, say=said.append, ask=lambda _: "", code=landed)


def test_denied_access_says_so(oauth: OAuthServer, tmp_path: Path) -> None:
    oauth.deny = True
    said: list[str] = []
    sign_in(client(oauth), tmp_path, say=said.append, ask=lambda _: "", print_url=True)
    landed = land(next(line.strip() for line in said if "/authorize?" in line))
    with pytest.raises(AuthError, match=r"did not grant access.*access_denied"):
        sign_in(client(oauth), tmp_path, say=said.append, ask=lambda _: "", code=landed)
    assert not (tmp_path / "oauth-tokens.json").exists()


def test_device_code_flow(oauth: OAuthServer, tmp_path: Path) -> None:
    def say(line: str) -> None:
        found = re.search(r"open (\S+) and enter the code (\w+)", line)
        if found:  # the owner types the code on their phone
            threading.Timer(0.3, requests.get, args=(found.group(1),),
                            kwargs={"params": {"user_code": found.group(2)}, "timeout": 10}).start()

    result = sign_in(client(oauth, device=True), tmp_path, say=say, ask=lambda _: "",
                     no_browser=True)
    assert result is not None
    assert oauth.introspect(result.tokens.access_token)["active"]
    assert "urn:ietf:params:oauth:grant-type:device_code" in {h.grant_type for h in oauth.token_hits()}


def test_refresh_before_expiry_rotates_and_saves_first(oauth: OAuthServer, tmp_path: Path) -> None:
    manager = signed_in(oauth, tmp_path)
    first = TokenStore(tmp_path).load()
    assert first is not None
    assert manager.access_token() == first.access_token  # fresh: no refresh
    assert oauth.token_hits("refresh_token") == []

    later = TokenManager(manager.client, tmp_path, wall_clock=lambda: first.expires_at - 60)
    token = later.access_token()  # within 5 minutes of expiry: refreshed first
    saved = TokenStore(tmp_path).load()
    assert saved is not None and saved.access_token == token != first.access_token
    assert saved.refresh_token != first.refresh_token  # the rotated one is on disk
    assert first.refresh_token not in oauth.live_refresh_tokens(oauth.login_as)
    assert (tmp_path / "oauth-tokens.json").stat().st_mode & 0o777 == 0o600
    # a restart reads the rotated token and can refresh again
    again = TokenManager(manager.client, tmp_path, wall_clock=lambda: saved.expires_at)
    again.access_token()
    assert [h.status for h in oauth.token_hits("refresh_token")] == [200, 200]


def test_a_server_that_does_not_rotate_keeps_the_refresh_token(oauth: OAuthServer,
                                                               tmp_path: Path) -> None:
    oauth.rotate = False
    manager = signed_in(oauth, tmp_path)
    before = TokenStore(tmp_path).load()
    assert before is not None
    manager.force_refresh()
    after = TokenStore(tmp_path).load()
    assert after is not None and after.refresh_token == before.refresh_token
    assert after.access_token != before.access_token


def test_concurrent_callers_refresh_once(oauth: OAuthServer, tmp_path: Path) -> None:
    signed_in(oauth, tmp_path)
    saved = TokenStore(tmp_path).load()
    assert saved is not None
    manager = TokenManager(client(oauth), tmp_path, wall_clock=lambda: saved.expires_at)
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(manager.access_token()))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1 and manager.refreshes == 1


def test_revoked_grant_names_the_auth_command(oauth: OAuthServer, tmp_path: Path) -> None:
    manager = signed_in(oauth, tmp_path)
    before = (tmp_path / "oauth-tokens.json").read_bytes()
    assert oauth.revoke_user(oauth.login_as) == 1
    with pytest.raises(AuthError, match=r"revoked or has expired.*run `retainer auth inbox`") as caught:
        manager.force_refresh()
    assert "rt-" not in str(caught.value) and "at-" not in str(caught.value)
    assert (tmp_path / "oauth-tokens.json").read_bytes() == before  # nothing overwritten


def test_not_signed_in(oauth: OAuthServer, tmp_path: Path) -> None:
    with pytest.raises(AuthError, match=r"not signed in yet; run `retainer auth inbox`"):
        TokenManager(client(oauth), tmp_path).access_token()


def test_sasl_strings_and_choice() -> None:
    assert xoauth2("me@x.example", "tok") == "user=me@x.example\x01auth=Bearer tok\x01\x01"
    assert oauthbearer("a,b=c@x", "tok", "imap.x", 993) == (
        "n,a=a=2Cb=3Dc@x,\x01host=imap.x\x01port=993\x01auth=Bearer tok\x01\x01")
    assert choose_mechanism(["PLAIN", "XOAUTH2", "OAUTHBEARER"]) == "OAUTHBEARER"
    assert choose_mechanism(["plain", "xoauth2"]) == "XOAUTH2"
    assert choose_mechanism(["PLAIN", "LOGIN"]) is None
