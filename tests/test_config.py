from __future__ import annotations

from pathlib import Path

import pytest

import tests.support.feed as feed
from agent.config import load_config, parse_duration
from agent.errors import ConfigError
from agent.plugins import make_plugin_host


@pytest.fixture
def host():
    return make_plugin_host(entrypoints=False, extra=[feed])


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_valid_config_validates_each_source(tmp_path, host):
    path = write(tmp_path, f"""
[agent]
data_dir = "{tmp_path}/data"
owner_emails = ["Me@Example.com"]
[[sources]]
name = "feed"
platform = "feed"
every = "5m"
[sources.settings]
path = "{tmp_path}/feed.jsonl"
""")
    config = load_config(path, host)
    assert config.agent.owner_emails == ["me@example.com"]
    assert config.sources[0].every.total_seconds() == 300
    assert config.settings["feed"].path == tmp_path / "feed.jsonl"


def test_error_names_file_source_and_key(tmp_path, host):
    path = write(tmp_path, """
[[sources]]
name = "news"
platform = "feed"
[sources.settings]
page_size = "many"
""")
    with pytest.raises(ConfigError) as err:
        load_config(path, host)
    text = str(err.value)
    assert str(path) in text
    assert 'sources[0] ("news")' in text
    assert "settings.path" in text and "settings.page_size" in text


def test_unknown_top_level_key_and_platform(tmp_path, host):
    with pytest.raises(ConfigError, match=r"agent\.dta_dir"):
        load_config(write(tmp_path, '[agent]\ndta_dir = "x"\n'), host)
    with pytest.raises(ConfigError, match='no plugin provides "gmail"'):
        load_config(write(tmp_path, '[[sources]]\nname="a"\nplatform="gmail"\n'), host)


def test_duplicate_source_names(tmp_path):
    text = '[[sources]]\nname="a"\nplatform="feed"\n[[sources]]\nname="a"\nplatform="feed"\n'
    with pytest.raises(ConfigError, match="names must be unique"):
        load_config(write(tmp_path, text))


def test_missing_and_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="retainer init"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[agent\n"))


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600),
                                               ("2d", 172800), (90, 90)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


def test_bad_duration():
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
