"""``retainer auth upwork SOURCE``: the OAuth 2.0 authorization-code sign-in.

The command prints Upwork's authorize URL (with a fresh ``state``), takes the code
(``--code``, or a prompt; the whole redirect URL is accepted too, and then its
``state`` must match), trades it for tokens and saves them 0600 in the source's folder
under the data folder. Other plugins may add their own subcommands to ``auth``.
"""

from __future__ import annotations

import time
from typing import Any

import click

from agent.errors import ConfigError
from agent.http import HttpClient

AUTH_HELP = "Sign a marketplace source in (OAuth)."


def auth_group(cli: click.Group) -> click.Group:
    """The shared ``auth`` group: the existing one, or a new one added to ``cli``."""
    existing = cli.commands.get("auth")
    if isinstance(existing, click.Group):
        return existing
    group = click.Group("auth", help=AUTH_HELP)
    cli.add_command(group)
    return group


def add_auth_command(cli: click.Group) -> None:
    auth_group(cli).add_command(upwork_auth, "upwork")


@click.command("upwork")
@click.argument("source")
@click.option("--code", help="The authorization code, or the whole URL Upwork redirected to.")
@click.option("--print-url", is_flag=True, help="Only print the authorize URL, then stop.")
@click.pass_obj
def upwork_auth(app: Any, source: str, code: str | None, print_url: bool) -> None:
    """Sign the Upwork source SOURCE in and save its tokens (0600) in the data folder."""
    from agent.errors import AuthError
    from agent.store import Store
    from plugins.upwork.oauth import (
        TokenStore,
        authorize_url,
        exchange_code,
        load_pending_state,
        new_state,
        parse_code,
        save_pending_state,
    )
    from plugins.upwork.settings import UpworkSettings

    config = app.config(only={source})
    source_config = config.source(source)
    if source_config.platform != "upwork":
        raise ConfigError(
            f'source "{source}" is a {source_config.platform} source, not upwork; '
            f"use `retainer auth {source_config.platform} {source}` if that platform has one"
        )
    settings = config.settings.get(source)
    if not isinstance(settings, UpworkSettings):
        settings = UpworkSettings.model_validate(source_config.settings)
    state_dir = Store(config.data_dir).source_dir(source)

    if code is None:
        state = new_state()
        save_pending_state(state_dir, state, now=time.time())
        url = authorize_url(settings.auth_url, client_id=settings.client_id,
                            redirect_uri=settings.redirect_uri, state=state)
        click.echo("Open this address, sign in to Upwork and allow Retainer access:\n")
        click.echo(f"  {url}\n")
        click.echo(f"Upwork then sends you to {settings.redirect_uri}?code=...&state=...")
        if print_url:
            click.echo(f"Finish with: retainer auth upwork {source} --code '<that URL or the code>'")
            return
        code = click.prompt("Paste the code, or the whole address you landed on")
    value, returned_state = parse_code(code)
    if returned_state is not None:
        expected = load_pending_state(state_dir)
        if expected is None or returned_state != expected:
            raise AuthError(
                "the state in that address does not match the sign-in Retainer started "
                f"(an old or forged link); run `retainer auth upwork {source}` again"
            )
    http = HttpClient(base_url=settings.token_url, timeout=settings.timeout,
                      max_retries=settings.max_retries, rate_per_second=settings.rate_per_second)
    try:
        tokens = exchange_code(
            http=http, token_url=settings.token_url, code=value, client_id=settings.client_id,
            client_secret=settings.client_secret.get_secret_value(),
            redirect_uri=settings.redirect_uri, now=time.time(),
        )
        store = TokenStore(state_dir)
        store.save(tokens)
        (state_dir / "upwork-auth-state.json").unlink(missing_ok=True)
        name = _whoami(settings, tokens.access_token, http)
    finally:
        http.close()
    who = f" as {name}" if name else ""
    click.echo(f"Signed in to Upwork{who}. Tokens saved in {store.path} (mode 0600).")
    click.echo(f"Next: retainer sync {source}")


def _whoami(settings: Any, access_token: str, http: HttpClient) -> str:
    """The signed-in user's name, to confirm the sign-in worked ("" if it cannot tell)."""
    from agent.errors import RetainerError
    from plugins.upwork import queries

    headers = {"Authorization": f"Bearer {access_token}"}
    if settings.tenant_id:
        headers["X-Upwork-API-TenantId"] = settings.tenant_id
    try:
        body = http.request("POST", settings.api_url, headers=headers, json={
            "query": queries.VIEWER, "variables": {}, "operationName": "RetainerViewer"})
    except RetainerError:
        return ""
    user = ((body or {}).get("data") or {}).get("user") or {} if isinstance(body, dict) else {}
    return str(user.get("name") or "")
