"""`retainer auth SOURCE`: the OAuth 2.0 sign-in of a source."""

from __future__ import annotations

import click

from agent.cli.app import App
from agent.errors import ConfigError


@click.command("auth")
@click.argument("names", nargs=-1, required=True, metavar="SOURCE")
@click.option("--no-browser", is_flag=True, help="No browser here: use the device code where "
              "the provider has one (Microsoft), else print the address and take the pasted "
              "redirect.")
@click.option("--code", help="Finish a sign-in started with --print-url: the address the "
              "browser landed on (or the bare code).")
@click.option("--print-url", is_flag=True, help="Only print the sign-in address, then stop.")
@click.pass_obj
def auth(app: App, names: tuple[str, ...], no_browser: bool, code: str | None,
         print_url: bool) -> None:
    """Sign the source SOURCE in (OAuth 2.0) and save its tokens (0600) in the data folder."""
    from agent.oauth import sign_in

    if len(names) == 2:  # `retainer auth upwork SOURCE`, from before auth was host-owned
        platform_name, source = names
        click.echo(f"retainer: `retainer auth {platform_name} {source}` is deprecated; "
                   f"use `retainer auth {source}`", err=True)
    elif len(names) == 1:
        platform_name, source = "", names[0]
    else:
        raise click.UsageError("give one source: retainer auth SOURCE")
    config = app.config(only={source})
    source_config = config.source(source)
    if platform_name and source_config.platform != platform_name:
        raise ConfigError(f'source "{source}" is a {source_config.platform} source, not '
                          f"{platform_name}; run `retainer auth {source}`")
    platform = app.host.platforms.get(source_config.platform)
    settings = config.settings.get(source)
    client = (platform.signin(settings, source)
              if platform is not None and platform.signin is not None and settings is not None
              else None)
    if client is None:
        hint = (' (set auth = "oauth2" in its settings to sign in with Google or Microsoft)'
                if source_config.platform == "imap" else "")
        raise ConfigError(f'source "{source}" does not sign in with OAuth 2.0{hint}')
    state_dir = app.store(config).source_dir(source)
    result = sign_in(client, state_dir, say=click.echo, no_browser=no_browser, code=code,
                     print_url=print_url,
                     ask=lambda prompt: str(click.prompt(prompt)))
    if result is None:
        return
    who = f" as {result.who}" if result.who else ""
    click.echo(f"Signed in to {client.provider.label}{who}. Tokens saved in {result.path} "
               "(mode 0600).")
    click.echo(f"Next: retainer sync {source}")

