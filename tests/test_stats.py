"""Roster metrics (`retainer contractors`, `contractors show`) and `contractors suggest`, on a
store filled by a real Maildir sync."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.stats import median
from tests.support.workflow_mail import TASKS, _deliver, _mail, run, synced


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return synced(tmp_path)


def roster(config: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(run(config, "contractors", "--json").stdout)}


def queue_ids(config: Path, who: str) -> list[str]:
    return [r["id"] for r in json.loads(run(config, "review", "--json").stdout)
            if r["contractor"] == who]


def test_roster_counts_and_turnaround_from_the_owners_brief(config: Path) -> None:
    rows = roster(config)
    assert set(rows) == {"Maria Lopez", "Sam Chen", "Priya Nair"}
    for name, row in rows.items():
        mine = [t for t in TASKS if t.name == name]
        assert row["deliverables"] == len(mine)
        # the brief is the owner's previous message in the thread (read from .Sent)
        assert row["median_turnaround_hours"] == pytest.approx(
            median(t.hours_to_deliver for t in mine), abs=0.1)
        assert row["platforms"] == ["email"]
        assert row["average_rating"] is None and row["revision_rate"] is None
        assert row["spend"] is None
        first = datetime.fromisoformat(row["first_contact"].replace("Z", "+00:00"))
        oldest = max(t.brief_days_ago for t in mine)
        assert abs((datetime.now(UTC) - first).total_seconds() / 86400 - oldest) < 0.1
    assert rows["Maria Lopez"]["skills"] == ["illustration", "logo"]
    assert rows["Maria Lopez"]["rate"] == 40
    assert rows["Priya Nair"]["status"] == "core"


def test_ratings_revision_rate_and_spend(config: Path) -> None:
    maria = queue_ids(config, "Maria Lopez")
    run(config, "review", "approve", maria[0], "--rating", "5", "--cost", "120")
    run(config, "review", "changes", maria[1], "--rating", "2", "--feedback", "Brighter please")
    run(config, "review", "approve", maria[1], "--rating", "4", "--cost", "80")
    sam = queue_ids(config, "Sam Chen")
    run(config, "review", "approve", sam[0], "--rating", "3", "--hours", "3")
    rows = roster(config)
    m = rows["Maria Lopez"]
    assert m["average_rating"] == 4.5  # latest rating of each reviewed piece: 5 and 4
    assert m["revision_rate"] == pytest.approx(1 / 3, abs=0.001)  # 1 of 3 reviews
    assert m["spend"] == 200 and m["spend_estimated"] is False
    assert m["approved"] == 2 and m["unreviewed"] == 1
    s = rows["Sam Chen"]
    assert s["spend"] == 90 and s["spend_estimated"] is True  # 3 h x rate 30
    assert s["revision_rate"] == 0
    assert rows["Priya Nair"]["spend"] is None
    out = run(config, "contractors").stdout
    header = out.splitlines()[0].split()
    assert header[:4] == ["ID", "NAME", "STATUS", "PLATFORMS"]
    for column in ("RATING", "REVISIONS", "TURNAROUND", "SPEND", "WORK", "RATE"):
        assert column in header
    maria_line = next(line for line in out.splitlines() if "Maria Lopez" in line)
    assert "4.5" in maria_line and "33%" in maria_line and "200" in maria_line
    assert "90*" in next(line for line in out.splitlines() if "Sam Chen" in line)
    shown = json.loads(run(config, "contractors", "show", "Maria Lopez", "--json").stdout)
    assert shown["average_rating"] == 4.5 and shown["deliverable_count"] == 3
    assert len(shown["deliverables"]) == 3
    human = run(config, "contractors", "show", "Maria Lopez").stdout
    assert "average rating 4.5" in human and "revisions 33%" in human


def test_turnaround_is_measured_from_a_recorded_instruction(config: Path, tmp_path: Path) -> None:
    run(config, "instructions", "add", "blog-brief", "--text", "Hi {{first_name}}: {{task}}",
        "--skill", "blog")
    when = (datetime.now(UTC) - timedelta(hours=10)).replace(microsecond=0, tzinfo=None)
    sent = json.loads(run(config, "instructions", "send", "blog-brief", "--to", "Sam Chen",
                          "--task", "Spring newsletter", "--record-only", "--sent-at",
                          when.isoformat(), "--json").stdout)
    sent_at = datetime.fromisoformat(sent["sent_at"].replace("Z", "+00:00"))
    assert sent_at == when.replace(tzinfo=UTC)
    assert sent["text"] == "Hi Sam: Spring newsletter" and sent["version"] == 1
    # Sam answers in a new thread (no brief in it), 6 hours later
    _deliver(tmp_path / "Mail", _mail("sam@example.com", "Sam Chen", "owner@example.com",
                                      "Spring newsletter draft", sent_at + timedelta(hours=6),
                                      "<news-draft@example.com>", "Draft attached",
                                      attachment=("newsletter.docx", b"draft" * 50)), "news")
    run(config, "sync")
    rows = roster(config)
    # Sam's turnarounds: 50 h, 72 h (from briefs) and 6 h (from the instruction)
    assert rows["Sam Chen"]["deliverables"] == 3
    assert rows["Sam Chen"]["median_turnaround_hours"] == pytest.approx(50, abs=0.1)
    report = json.loads(run(config, "report", "--json").stdout)
    skills = {s["skill"]: s for s in report["skills"]}
    assert skills["blog"]["deliverables"] == 3  # blog-freelancer, product copy (first skill), newsletter


def test_suggest_ranks_the_team_by_skill_and_shows_cost(config: Path) -> None:
    maria = queue_ids(config, "Maria Lopez")
    run(config, "review", "approve", maria[0], "--rating", "5", "--cost", "150")
    result = json.loads(run(config, "contractors", "suggest", "logo design", "--json").stdout)
    assert result["task"] == "logo design"
    top = result["suggestions"][0]
    assert top["name"] == "Maria Lopez"
    assert top["parts"]["skill"] > 0 and top["cost_per_deliverable"] == 50.0
    blog = json.loads(run(config, "contractors", "suggest", "a blog post", "--json").stdout)
    assert blog["suggestions"][0]["name"] == "Sam Chen"
    web = json.loads(run(config, "contractors", "suggest", "landing page", "--json").stdout)
    assert web["suggestions"][0]["name"] == "Priya Nair"
    run(config, "contractors", "status", "Maria Lopez", "retired")
    again = json.loads(run(config, "contractors", "suggest", "logo design", "--json").stdout)
    assert "Maria Lopez" not in [s["name"] for s in again["suggestions"]]
    out = run(config, "contractors", "suggest", "web design").stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["SCORE", "NAME", "STATUS"] and "Priya Nair" in lines[1]
    assert "COST/PIECE" in lines[0]
    nobody = run(config, "contractors", "suggest", "video editing").stdout
    assert "Nobody has done" in nobody
