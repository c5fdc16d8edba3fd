"""The pydantic-free reading of the config (``agent.config.file.plain_config``, used by
``retainer status``): for every file it accepts, the values are those of
``load_config(validate=False)``; every file pydantic rejects, it hands back (``None``),
so the command reports the same error as before."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from agent.cli.starter import STARTER_CONFIG
from agent.config import load_config
from agent.config.file import plain_config
from agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

BASE = """
[agent]
data_dir = "{data}"
owner_emails = [" Me@Example.com "]
{extra_agent}

[[contractors]]
name = "Maria"
emails = ["maria@example.com"]
rate = 40
status = "core"
identities = {{ upwork = "~01" }}

[[sources]]
name = "inbox"
platform = "imap"
every = "5m"
[sources.settings]
host = "imap.example.com"

[[sources]]
name = "archive.2"
platform = "maildir"
enabled = false
{extra_source}

[[notifiers]]
type = "desktop"

[plugins.upwork]
anything = 1
"""

VALID = [
    {},
    {"extra_agent": 'review_overdue = "2d"\nmax_attachment_mb = 20\nlog_level = "debug"'},
    {"extra_agent": "review_since = 2026-01-02"},
    {"extra_agent": "review_since = false"},
    {"extra_source": 'every = 600'},
    {"extra_source": 'every = "1.5h"'},
]

INVALID = [  # pydantic rejects each of these
    {"extra_agent": "review_since = true"},
    {"extra_agent": "review_since = 2026-01-02T10:00:00"},
    {"extra_agent": 'log_level = "LOUD"'},
    {"extra_agent": "max_attachment_mb = 0"},
    {"extra_agent": "max_attachment_mb = nan"},
    {"extra_agent": 'review_overdue = "soon"'},
    {"extra_agent": 'hots = "typo"'},
    {"extra_agent": 'web = "localhost:http"'},
    {"extra_source": 'every = "-5m"'},
    {"extra_source": '[[sources]]\nname = "two words"\nplatform = "imap"'},
    {"extra_source": 'colour = "blue"'},
    {"extra_source": 'settings = "a string"'},
    {"extra_source": '[[sources]]\nname = "inbox"\nplatform = "imap"'},  # a duplicate name
]

ODD_BUT_VALID = [  # pydantic coerces or checks these; the plain reading leaves them to it
    {"extra_agent": 'web = "127.0.0.1:8765"'},
    {"extra_agent": 'review_since = "2026-01-02"'},
    {"extra_source": '[[sources]]\nname = "x"\nplatform = "imap"\nenabled = "yes"'},
]


def write(tmp_path: Path, case: dict[str, str]) -> Path:
    path = tmp_path / "retainer.toml"
    path.write_text(BASE.format(data=tmp_path / "data", extra_agent=case.get("extra_agent", ""),
                                extra_source=case.get("extra_source", "")))
    return path


def same_values(path: Path) -> None:
    plain = plain_config(path)
    full = load_config(path)
    assert plain is not None
    assert plain.data_dir == full.data_dir
    assert plain.agent.review_since == full.agent.review_since
    assert list(plain.agent.owner_emails) == full.agent.owner_emails
    assert [(s.name, s.platform, s.enabled, str(s.every)) for s in plain.sources] == [
        (s.name, s.platform, s.enabled, str(s.every)) for s in full.sources]


@pytest.mark.parametrize("case", VALID)
def test_a_valid_file_reads_the_same_without_pydantic(tmp_path: Path, case: dict[str, str]
                                                      ) -> None:
    same_values(write(tmp_path, case))


@pytest.mark.parametrize("case", INVALID)
def test_a_file_pydantic_rejects_is_handed_back(tmp_path: Path, case: dict[str, str]) -> None:
    path = write(tmp_path, case)
    with pytest.raises(ConfigError):
        load_config(path)
    assert plain_config(path) is None


@pytest.mark.parametrize("case", ODD_BUT_VALID)
def test_coerced_values_are_left_to_pydantic(tmp_path: Path, case: dict[str, str]) -> None:
    path = write(tmp_path, case)
    load_config(path)
    assert plain_config(path) is None


def test_the_starter_and_example_configs_read_the_same(tmp_path: Path) -> None:
    starter = tmp_path / "starter.toml"
    starter.write_text(STARTER_CONFIG)
    same_values(starter)
    same_values(ROOT / "configs" / "retainer.example.toml")
    assert plain_config(starter) is not None


def test_status_answers_alike_either_way(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from agent.cli import App, build_cli
    from agent.plugins import make_plugin_host

    outputs = []
    for case in ({"extra_agent": "review_since = 2026-01-02"},
                 {"extra_agent": 'review_since = "2026-01-02"'}):  # plain, then pydantic
        path = write(tmp_path, case)
        app = App(path, False, 0, make_plugin_host(entrypoints=False))
        result = CliRunner().invoke(build_cli(app), ["--config", str(path), "status", "--json"],
                                    obj=app)
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    assert '"review_since": "2026-01-02"' in outputs[0]
    assert plain_config(write(tmp_path, {"extra_agent": "review_since = 2026-01-02"})
                        ).agent.review_since == date(2026, 1, 2)  # type: ignore[union-attr]
