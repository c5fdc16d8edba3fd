"""Store files of the wrong shape are refused, never read as empty and overwritten."""

from __future__ import annotations

import pytest

from tests.test_cli import run
from tests.test_sync import make_config

SHAPES = ["null", "{}", "[]", "5", '"text"', '{"contractors": []}', '{"sources": {"1": "x"}}',
          '{"sources": {"a": {"source": "feed"}}}', '{"sources": {"1": {"no": 1}}}']


@pytest.mark.parametrize("name", ["roster.json", "meta.json"])
@pytest.mark.parametrize("content", SHAPES)
def test_wrong_shape_is_refused_and_left_alone(tmp_path, name, content):
    config = make_config(tmp_path)
    run(config, "sync")
    path = tmp_path / "data" / "store" / name
    path.write_text(content)
    commands = [["sync"], ["status"]] + ([["contractors"], ["messages"]]
                                          if name == "roster.json" else [])
    for command in commands:
        result = run(config, *command, expect=1)
        assert "Move it aside" in result.output and str(path) in result.output, result.output
        assert "Traceback" not in result.output
        assert result.output.count("\n") == 1
    assert path.read_text() == content  # not overwritten: the live roster is not lost
