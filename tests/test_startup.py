"""Start-up cost: registering the builtin plugins must not import heavy modules.

Every `retainer` command that loads plugins (``sync`` included, even a no-op one) pays
for whatever the plugin modules import. HTTP, HTML, IMAP, TLS and SMTP libraries are
imported by the methods that use them, so only the platforms a run actually uses load
them. Each check runs in a fresh interpreter: this test process has imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

#: Modules that registering the builtin plugins must leave unimported.
HEAVY = (
    "requests",
    "urllib3",
    "charset_normalizer",
    "bs4",
    "imapclient",
    "smtplib",
    "ssl",
    "http.client",
    "email.mime",
)

BUILTIN_PLATFORMS = ["freelancer", "imap", "maildir", "upwork"]

_PROBE = """
import json, sys
{before}
from agent.plugins import make_plugin_host
host = make_plugin_host()
print(json.dumps({{
    "platforms": sorted(host.platforms),
    "errors": {{i.name: i.error for i in host.infos_sorted() if i.error}},
    "heavy": sorted(m for m in {heavy!r} if m in sys.modules),
}}))
"""


def _probe(before: str = "") -> dict[str, object]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RETAINER_LOAD_PLUGINS", "RETAINER_DISABLE_PLUGINS")}
    code = _PROBE.format(before=before, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_registering_builtin_plugins_imports_no_heavy_module() -> None:
    result = _probe()
    assert result["errors"] == {}
    assert result["platforms"] == BUILTIN_PLATFORMS  # the plugins really were loaded
    assert result["heavy"] == [], (
        f"registering the plugins imported {result['heavy']}; import them inside the "
        "functions that use them (see agent/http.py, plugins/imap/connector.py)")


@pytest.mark.parametrize("module", ["requests", "imapclient", "smtplib"])
def test_probe_sees_a_heavy_import(module: str) -> None:
    """The probe itself works: a heavy module imported before the host is reported."""
    result = _probe(f"import {module}")
    assert module in result["heavy"]  # type: ignore[operator]
