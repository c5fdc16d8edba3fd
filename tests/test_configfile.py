"""agent.config.file: where the config lives, reading TOML, durations, the quick [agent] read."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agent.config.file import (
    DEFAULT_REVIEW_OVERDUE,
    QuickConfig,
    check_data_dir,
    default_config_path,
    default_data_dir,
    expand_path,
    parse_address,
    parse_duration,
    quick_config,
    read_toml,
    sync_needs,
)
from agent.durations import MAX_DURATION
from agent.errors import ConfigError


@pytest.mark.parametrize(("value", "seconds"), [
    ("1s", 1), ("1", 1), ("0.5s", 0.5),
    ("30s", 30), ("30 sec", 30), ("5m", 300), ("5 min", 300), ("1h", 3600), ("2d", 172800),
    ("45", 45), (" 90s ", 90), ("1.5m", 90), ("0.5h", 1800), (90, 90), (2.5, 2.5),
    (timedelta(minutes=2), 120),
])
def test_durations(value, seconds):
    assert parse_duration(value) == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["0s", "0", 0, 0.0, -5, "0m"])
def test_zero_or_negative_duration_is_refused(value):
    with pytest.raises(ValueError, match=r"^a duration must be positive$"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["soon", "5x", "5 m s", "-5m", "m", "", True, None, "1e3s"])
def test_not_a_duration(value):
    with pytest.raises(ValueError) as err:
        parse_duration(value)
    assert str(err.value) == f'"{value}" is not a duration; write e.g. "30s", "5m", "1h", "1d"'


def test_config_path_from_env_then_platform(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RETAINER_CONFIG", "~/retainer.toml")
    assert default_config_path() == tmp_path / "home" / "retainer.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("RETAINER_CONFIG", "")  # empty means unset
    assert default_config_path() == tmp_path / "xdg" / "retainer" / "config.toml"
    monkeypatch.delenv("RETAINER_CONFIG")
    assert default_config_path() == tmp_path / "xdg" / "retainer" / "config.toml"


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assert default_data_dir() == tmp_path / "share" / "retainer"


def test_read_toml_errors_say_what_to_do(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as err:
        read_toml(missing)
    assert str(err.value) == (f"{missing}: no config file here; run `retainer init` to write a "
                              "starter config, or pass --config PATH")
    broken = tmp_path / "broken.toml"
    broken.write_text("[agent\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML: ") as err:
        read_toml(broken)
    assert err.value.__cause__ is None
    with pytest.raises(ConfigError) as err:
        read_toml(tmp_path)  # a folder, not a file
    assert str(err.value) == f"{tmp_path} is a folder, not a config file; pass --config FILE"
    good = tmp_path / "good.toml"
    good.write_text('[agent]\ndata_dir = "x"\n')
    assert read_toml(good) == {"agent": {"data_dir": "x"}}


def test_quick_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RETAINER_TEST_DIR", "sub")
    path = tmp_path / "c.toml"
    path.write_text('[agent]\ndata_dir = "~/$RETAINER_TEST_DIR/data"\nreview_overdue = "2h"\n')
    assert quick_config(path) == QuickConfig(path, tmp_path / "home" / "sub" / "data",
                                             timedelta(hours=2))
    assert expand_path("~/$RETAINER_TEST_DIR") == tmp_path / "home" / "sub"


def test_quick_config_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    path = tmp_path / "c.toml"
    path.write_text("[[sources]]\nname = 'a'\n")
    quick = quick_config(path)
    assert quick.data_dir == tmp_path / "share" / "retainer"
    assert quick.review_overdue == DEFAULT_REVIEW_OVERDUE == timedelta(days=3)
    assert quick.path == path


@pytest.mark.parametrize(("text", "message"), [
    ('agent = "x"\n', "agent: must be a table ([agent])"),
    ('[agent]\nreview_overdue = "0s"\n', "agent.review_overdue: a duration must be positive"),
    ('[agent]\nreview_overdue = "later"\n', 'agent.review_overdue: "later" is not a duration'),
])
def test_quick_config_errors_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        quick_config(path)
    assert str(err.value).startswith(f"{path}: {message}")
    assert err.value.__cause__ is None


@pytest.mark.parametrize(("value", "address"), [
    ("127.0.0.1:8765", ("127.0.0.1", 8765)), ("8766", ("127.0.0.1", 8766)),
    (":8767", ("127.0.0.1", 8767)), (" [::1]:9000 ", ("::1", 9000)),
    ("0.0.0.0:0", ("0.0.0.0", 0)), ("localhost:65535", ("localhost", 65535)),
    ("XBOX.lan:80", ("XBOX.lan", 80)),  # only the brackets of an IPv6 address are taken off
])
def test_parse_address(value, address):
    assert parse_address(value) == address


@pytest.mark.parametrize(("value", "message"), [
    ("localhost:http", 'agent.web: "localhost:http" is not an address like "127.0.0.1:8765"'),
    ("127.0.0.1:65536", "agent.web: port 65536 is out of range (1 to 65535)"),
    ("-1", "agent.web: port -1 is out of range (1 to 65535)"),
])
def test_parse_address_errors_say_what_is_wrong(value, message):
    with pytest.raises(ConfigError) as info:
        parse_address(value)
    assert str(info.value) == message


def test_a_duration_is_at_most_ten_years():
    assert parse_duration("3650d") == MAX_DURATION == timedelta(days=3650)
    assert parse_duration(MAX_DURATION.total_seconds()) == MAX_DURATION
    for value in ("3651d", "3650.5d", 3650 * 86400 + 1):
        with pytest.raises(ValueError) as err:
            parse_duration(value)
        assert str(err.value) == f'"{value}" is too long; a duration must be at most 3650d (ten years)'
    with pytest.raises(ValueError, match=r"^a duration must be positive$"):
        parse_duration(float("nan"))


@pytest.mark.parametrize(("value", "message"), [
    (42, "must be a folder path in quotes, not int 42"),
    (["a"], "must be a folder path in quotes, not list ['a']"),
    ("", 'must not be empty; e.g. data_dir = "~/.local/share/retainer"'),
    ("  ", 'must not be empty; e.g. data_dir = "~/.local/share/retainer"'),
    ("a\x00b", "must not contain a NUL character"),
])
def test_data_dir_must_name_a_folder(value, message):
    with pytest.raises(ValueError) as err:
        check_data_dir(value)
    assert str(err.value) == message


def test_data_dir_may_exist_as_a_folder_or_not_yet(tmp_path):
    assert check_data_dir(str(tmp_path)) == tmp_path
    assert check_data_dir(tmp_path / "new") == tmp_path / "new"  # a Path is taken as is
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError) as err:
        check_data_dir(str(tmp_path / "afile"))
    assert str(err.value) == f"{tmp_path}/afile exists and is not a folder; choose another data_dir"
    too_long = tmp_path / ("x" * 300)  # the name alone is longer than a filesystem allows
    with pytest.raises(ValueError) as err:
        check_data_dir(str(too_long))
    assert str(err.value) == f"{too_long} cannot be checked (File name too long)"
    assert err.value.__cause__ is None


@pytest.mark.parametrize(("text", "message"), [
    ("[agent]\ndata_dir = 42\n", "agent.data_dir: must be a folder path in quotes, not int 42"),
    ('[agent]\ndata_dir = ""\n', "agent.data_dir: must not be empty"),
    ('[agent]\nreview_overdue = "3651d"\n', 'agent.review_overdue: "3651d" is too long'),
])
def test_quick_config_refuses_a_bad_data_dir_or_duration(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        quick_config(path)
    assert str(err.value).startswith(f"{path}: {message}")
    assert err.value.__cause__ is None


def test_read_toml_names_the_line_of_text_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[agent]\n# ok\nname = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        read_toml(path)
    assert str(err.value) == (f"{path}: line 3: not UTF-8 text (byte 0xe9); save the file as UTF-8")
    assert err.value.__cause__ is None
    first = tmp_path / "first.toml"
    first.write_bytes(b"\xff = 1\n")
    with pytest.raises(ConfigError, match=r": line 1: not UTF-8 text \(byte 0xff\)"):
        read_toml(first)


def test_read_toml_that_cannot_be_read_says_why(tmp_path):
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "afile" / "config.toml"  # a file where a folder should be
    with pytest.raises(ConfigError) as err:
        read_toml(path)
    assert str(err.value) == f"{path}: cannot read the config file: Not a directory"
    assert err.value.__cause__ is None


# -- the whole file without pydantic (plain_config): what it reads is what pydantic reads,
# what pydantic refuses it hands back (None) ---------------------------------------------

SEED = '[[contractors]]\nname = "Ana"\n'
READ_ALIKE = [
    "",  # no [agent]: every default
    '[agent]\nmax_attachment_mb = 0.5\nowner_emails = [" Me@Example.com "]',
    "[agent]\nmax_attachment_mb = 1048576",  # the largest allowed
    '[agent]\ndata_dir = "{tmp}/d"\nowner_emails = []\nmax_attachment_mb = 1\n'
    'review_overdue = "1d"\nlog_level = "info"\nreview_since = false\nweb = ""',  # every key
    SEED + 'emails = ["a@x.com"]\nskills = ["logo"]\nstatus = "core"\nrate = 40\n'
           'currency = "EUR"\nidentities = { upwork = "~01" }\nnotes = "n"',  # every key
    SEED + 'status = "bench"\nrate = 0',
    SEED + 'status = "retired"\nrate = 0.5',
    '[[notifiers]]\ntype = "desktop"\n[plugins.upwork]\nanything = 1',
]
REFUSED = [
    "x = 1",
    '[agent]\nowner_emails = "me@example.com"',
    "[agent]\nmax_attachment_mb = 1048577",
    "[agent]\nmax_attachment_mb = 1048576.5",
    'notifiers = ["desktop"]',
    'notifiers = "desktop"',
    "plugins = { upwork = 1 }",
    "plugins = 3",
    'contractors = "Ana"',
    "contractors = [1]",
    SEED + "bogus = 1",
    "[[contractors]]\nname = 3",
    '[[contractors]]\nemails = ["a@x.com"]',
    SEED + "rate = -1", SEED + "rate = inf", SEED + "rate = nan",
    SEED + 'identities = "x"', SEED + "identities = { upwork = 1 }",
    SEED + "notes = 1", SEED + "currency = 1", SEED + 'status = "gone"',
    SEED + 'emails = "a@x.com"', SEED + "emails = [1]",
    SEED + 'skills = "logo"', SEED + "skills = [1]",
]


def plain_and_full(tmp_path, monkeypatch, text):
    from agent.config import load_config
    from agent.config.file import plain_config

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    path = tmp_path / "retainer.toml"
    path.write_text(text.replace("{tmp}", str(tmp_path)) + "\n")
    try:
        full = load_config(path)
    except ConfigError:
        full = None
    return path, plain_config(path), full


@pytest.mark.parametrize("text", READ_ALIKE)
def test_plain_reading_gives_what_pydantic_gives(tmp_path, monkeypatch, text):
    path, plain, full = plain_and_full(tmp_path, monkeypatch, text)
    assert full is not None and plain is not None
    assert plain.path == path and plain.data_dir == full.data_dir
    assert plain.agent.review_since == full.agent.review_since
    assert list(plain.agent.owner_emails) == full.agent.owner_emails


@pytest.mark.parametrize("text", REFUSED)
def test_plain_reading_hands_back_what_pydantic_refuses(tmp_path, monkeypatch, text):
    _path, plain, full = plain_and_full(tmp_path, monkeypatch, text)
    assert full is None and plain is None


SYNC_CONFIG = """
[agent]
data_dir = "DATA"

[[sources]]
name = "inbox"
platform = "imap"

[[sources]]
name = "upwork"
platform = "upwork"

[[sources]]
name = "old"
platform = "freelancer"
enabled = false

[[sources]]
name = "later"
platform = "gmail"
enabled = true

[plugins.retainer-upwork]
poll = "5m"

[plugins.acme]
"""


def test_sync_needs_names_the_platforms_plugins_and_notifiers_a_sync_loads(tmp_path):
    path = tmp_path / "c.toml"
    data = tmp_path / "data"
    path.write_text(SYNC_CONFIG.replace("DATA", str(data)))
    # every source that is not disabled (enabled = true is the same as no key)
    assert sync_needs(path, ()) == (data, {"imap", "upwork", "gmail"},
                                    {"retainer-upwork", "acme"}, False)
    # named sources only, whether enabled or not; an unknown name adds nothing
    assert sync_needs(path, ("old", "nope")) == (data, {"freelancer"},
                                                  {"retainer-upwork", "acme"}, False)
    path.write_text(SYNC_CONFIG.replace("DATA", str(data))
                    + '[[notifiers]]\nplatform = "email"\n')
    assert sync_needs(path, ("inbox",)) == (data, {"imap"}, {"retainer-upwork", "acme"}, True)
    path.write_text(f'notifiers = []\n[agent]\ndata_dir = "{data}"\n')  # no sources, none
    assert sync_needs(path, ()) == (data, set(), set(), False)


@pytest.mark.parametrize("text", [
    "[agent\n",  # not TOML
    '[agent]\nreview_overdue = "later"\n',  # the quick [agent] read fails
    'sources = "inbox"\n',
    'sources = ["inbox"]\n',
    '[[sources]]\nname = "a"\nplatform = "imap"\n[[sources]]\nname = "b"\nplatform = 7\n',
    '[[sources]]\nname = "a"\n',  # no platform
    'plugins = ["acme"]\n',
])
def test_sync_needs_is_none_when_the_file_is_not_plainly_shaped(tmp_path, text):
    """Then every plugin loads and the full validation says what is wrong."""
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert sync_needs(path, ()) is None
