"""IMAP ``auth = "oauth2"`` settings: what each provider needs, and clear errors."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from plugins.imap.settings import ImapSettings

BASE: dict[str, Any] = {"host": "imap.example.com", "username": "me@example.com"}


def make(**values: Any) -> ImapSettings:
    return ImapSettings.model_validate({**BASE, **values})


def test_password_is_still_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_FOR_TEST", "pw-1234")
    settings = make(password={"env": "PW_FOR_TEST"})
    assert settings.auth == "password" and settings.oauth_client("inbox") is None
    with pytest.raises(ValidationError, match='password is required for auth = "password"'):
        make()


def test_google_needs_a_client_secret_and_asks_for_offline_mail_access(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="Google needs the OAuth client's secret"):
        make(auth="oauth2", provider="google", client_id="abc.apps.googleusercontent.com")
    monkeypatch.setenv("GOOGLE_SECRET_FOR_TEST", "gsecret-1234")
    settings = make(auth="oauth2", provider="google", client_id="abc.apps.googleusercontent.com",
                    client_secret={"env": "GOOGLE_SECRET_FOR_TEST"})
    client = settings.oauth_client("gmail")
    assert client is not None
    assert client.provider.scopes == ("https://mail.google.com/",)
    assert client.provider.token_url == "https://oauth2.googleapis.com/token"
    assert ("access_type", "offline") in client.provider.authorize_params
    assert client.client_secret == "gsecret-1234" and "gsecret" not in repr(client)
    assert client.redirect_uri is None  # a loopback redirect on a free port


def test_microsoft_is_a_public_client_with_device_code() -> None:
    settings = make(auth="oauth2", provider="microsoft", client_id="0000-1111", tenant="contoso.com")
    client = settings.oauth_client("office")
    assert client is not None and client.client_secret is None
    assert client.provider.scopes == ("https://outlook.office.com/IMAP.AccessAsUser.All",
                                      "https://outlook.office.com/SMTP.Send", "offline_access")
    assert client.provider.authorize_url == (
        "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize")
    assert client.provider.device_url == (
        "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/devicecode")


def test_oauth2_needs_provider_and_client_id() -> None:
    with pytest.raises(ValidationError, match="needs provider"):
        make(auth="oauth2")
    with pytest.raises(ValidationError, match="needs provider"):
        make(auth="oauth2", provider="microsoft")


def test_custom_names_its_endpoints_over_https() -> None:
    with pytest.raises(ValidationError, match="needs authorize_url, token_url, scopes"):
        make(auth="oauth2", provider="custom", client_id="x")
    with pytest.raises(ValidationError, match="must be an https:// address"):
        make(auth="oauth2", provider="custom", client_id="x", scopes=["mail"],
             authorize_url="http://auth.example.com/a", token_url="https://auth.example.com/t")
    ok = make(auth="oauth2", provider="custom", client_id="x", scopes=["mail"],
              authorize_url="http://127.0.0.1:8080/a", token_url="https://auth.example.com/t")
    client = ok.oauth_client("inbox")
    assert client is not None and client.provider.scopes == ("mail",)
