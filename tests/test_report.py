"""`retainer report`: JSON, human form, and the HTML report opened in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.models import Attachment, Contract, Identity, Message
from agent.store import Store
from agent.store import workflow as wf
from tests.support.workflow_mail import run, synced

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chromium(html: Path, tmp_path: Path, *, screenshot: Path | None = None) -> str:
    """Open ``html`` in headless Chromium; return the DOM it rendered (and take a screenshot)."""
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is required (apt-get install chromium)")
    profile = tmp_path / "chromium-profile"
    base = [CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,2000"]
    if screenshot is not None:
        subprocess.run([*base, f"--screenshot={screenshot}", html.as_uri()], check=True,
                       capture_output=True, timeout=120)
    done = subprocess.run([*base, "--dump-dom", html.as_uri()], check=True, capture_output=True,
                          timeout=120, text=True)
    return done.stdout


def review_some(config: Path) -> None:
    rows = json.loads(run(config, "review", "--json").stdout)
    ratings = {"Maria Lopez": ("approve", "5"), "Sam Chen": ("changes", "2"),
               "Priya Nair": ("approve", "4")}
    for row in rows[:5]:
        verb, rating = ratings[row["contractor"]]
        run(config, "review", verb, row["id"], "--rating", rating, "--cost", "100")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    config = synced(tmp_path)
    review_some(config)
    return config


def test_report_json_per_contractor_and_skill_with_trend(config: Path) -> None:
    doc = json.loads(run(config, "report", "--json").stdout)
    assert doc["period_days"] == 90
    totals = doc["totals"]
    assert totals["deliverables"] == 7 and totals["reviewed"] == 5 and totals["unreviewed"] == 2
    assert totals["spend"] == 500
    assert totals["revision_rate"] == pytest.approx(2 / 5, abs=0.001)  # both of Sam's
    assert totals["median_review_latency_hours"] > 24
    assert totals["previous"]["deliverables"] == 0
    assert totals["trend"]["deliverables"] == 7
    by_name = {c["name"]: c for c in doc["contractors"]}
    assert by_name["Maria Lopez"]["deliverables"] == 3
    assert by_name["Sam Chen"]["revision_rate"] == 1.0
    assert by_name["Maria Lopez"]["average_rating"] == 5.0
    for key in ("spend", "average_rating", "revision_rate", "median_turnaround_hours",
                "median_review_latency_hours", "trend", "previous"):
        assert key in by_name["Maria Lopez"]
    skills = {s["skill"] for s in doc["skills"]}
    assert skills == {"logo", "illustration", "blog", "landing page"}
    assert sum(s["deliverables"] for s in doc["skills"]) == 7
    assert doc["review_latency"] and all(p["median_hours"] >= 0 for p in doc["review_latency"])
    # a short period excludes the older work, and its trend compares with the period before
    short = json.loads(run(config, "report", "--since", "10d", "--json").stdout)
    assert short["totals"]["deliverables"] == 3  # delivered 1.2, 5.6 and 9 days ago
    assert short["totals"]["previous"]["deliverables"] == 1  # 18.75 days ago
    assert short["totals"]["trend"]["deliverables"] == 2


def test_report_human_form_and_bad_period(config: Path) -> None:
    out = run(config, "report").stdout
    assert "Delegation report" in out and "7 deliverables" in out
    assert "Maria Lopez" in out and "REVIEW LATENCY" in out and "SKILL" in out
    assert "--since" in run(config, "report", "--since", "soon", expect=2).output


def test_html_report_renders_in_chromium_with_labelled_charts(config: Path, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    out = run(config, "report", "--html", str(html)).stdout
    assert str(html) in out
    text = html.read_text()
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org", "")
    shot = tmp_path / "report.png"
    dom = chromium(html, tmp_path, screenshot=shot)
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2000)
    assert 'id="spend-quality"' in dom and 'id="review-latency"' in dom
    assert "Spend in the period" in dom and "Average rating (1 to 5)" in dom
    assert "Median hours to review" in dom and "Week of review" in dom
    assert len(re.findall(r'<circle class="dot"', dom)) == 3
    assert len(re.findall(r'<rect class="bar"', dom)) >= 1
    assert "Maria Lopez" in dom


def _fill_many(store: Store, contractors: int, now: datetime) -> None:
    """500 contractors with contracts, messages and deliverables, through the real write path."""
    with store.writing():
        for i in range(contractors):
            who = Identity("upwork", f"u{i}", name=f"Contractor {i:03d}")
            records = [Contract(f"k{i}", who, title="Work", started_at=now - timedelta(days=80),
                                spent=float(50 + i * 3), currency="USD")]
            for j in range(2):
                when = now - timedelta(days=5 + (i * 7 + j * 13) % 80)
                records.append(Message(f"m{i}-{j}", when, who, subject=f"Design {j}",
                                       attachments=(Attachment(f"file{j}.png", data=b"x" * 10),)))
            store.commit_page("market", "upwork", records)
        for n, doc in enumerate(store.deliverables()):
            wf.record_review(store, doc["id"], "approved" if n % 4 else "changes_requested",
                             rating=1 + n % 5,
                             when=datetime.fromisoformat(doc["received_at"].replace("Z", "+00:00"))
                             + timedelta(hours=1 + n % 70))


@pytest.mark.parametrize("count", [0, 500])
def test_html_report_with_0_and_500_contractors(tmp_path: Path, count: int) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n')
    store = Store(tmp_path / "data")
    if count:
        _fill_many(store, count, datetime.now(UTC))
    doc = json.loads(run(config, "report", "--json").stdout)
    assert len(doc["contractors"]) == count
    html = tmp_path / "report.html"
    run(config, "report", "--html", str(html))
    shot = tmp_path / "report.png"
    dom = chromium(html, tmp_path, screenshot=shot)
    assert shot.read_bytes().startswith(PNG_MAGIC)
    assert 'id="spend-quality"' in dom and 'id="review-latency"' in dom
    assert "Spend in the period" in dom and "Median hours to review" in dom
    dots = len(re.findall(r'<circle class="dot"', dom))
    if count:
        assert dots == count
        assert doc["totals"]["deliverables"] == 2 * count
        assert "and 300 more" in dom  # the table stops at 200 rows, the JSON has them all
    else:
        assert dots == 0 and "No rated work in this period yet" in dom
        assert "No reviews in this period yet" in dom


def test_report_from_given_facts_matches_the_read_model_whatever_the_review_order(
        config: Path) -> None:
    """The report of facts handed in (as the dashboard does), reviews in any order and the
    first reviews precomputed or not, is the report of the store's read model, byte for byte."""
    from agent.report import build
    from agent.stats import Facts, review_marks

    store = Store(config.parent / "data")
    now = datetime.now(UTC)
    expected = json.dumps(build(store, now=now), sort_keys=True)

    def given(reviews: list) -> Facts:
        return Facts(store.roster(), store.contractors(), store.deliverables(), reviews,
                     wf.sent_instructions(store), store.contracts(), store.thread_activity())

    reviews = wf.review_events(store)
    assert len(reviews) == 5
    shuffled = given(list(reversed(reviews)))
    assert json.dumps(build(store, now=now, facts=shuffled), sort_keys=True) == expected
    marks = review_marks(shuffled)
    assert marks["marks_t"] == sorted(marks["marks_t"])
    firsts = [tuple(f) for f in marks["first_reviews"]]
    assert [f[0] for f in firsts] == sorted(f[0] for f in firsts)
    handed = given(reviews)
    handed._cache["first_reviews"] = firsts  # what the dashboard keeps itself
    assert json.dumps(build(store, now=now, facts=handed), sort_keys=True) == expected
    changed = given(reviews)
    changed._cache["first_reviews"] = [(at, 1.0) for at, _ in firsts]  # (it is what is used)
    assert build(store, now=now, facts=changed)["totals"]["median_review_latency_hours"] == 1.0


def test_the_recent_part_of_the_model_computes_what_the_whole_model_does(config: Path) -> None:
    """`report` reads `delegation-recent` (the model from 200 days back) when its periods
    start after that: every window from the cut on, by contractor and by skill, and the
    report itself, come out exactly as from the whole model."""
    from agent import stats
    from agent.report import build
    from agent.store import readmodels

    store = Store(config.parent / "data")
    whole = stats._stored_model(store)
    times = sorted({t for section in ("contractors", "skills")
                    for g in whole[section].values()
                    for t in [*g["works"]["t"], *g["events"]["t"]]})
    assert len(times) >= 5

    def facts_with(data: dict, start: str) -> stats.Facts:
        facts = stats.Facts.load(store)
        facts._cache.update(model=data, model_from=start)
        return facts

    def when(stamp: str) -> datetime:
        parsed = stats.parse_time(stamp)
        assert parsed is not None
        return parsed

    for start in (times[0], times[len(times) // 2], times[-1]):
        part = stats.model_from(whole, start)
        assert stats._well_formed(part)
        for lo in [t for t in times if t >= start] + [start]:
            for hi in (None, times[-1]):
                for by_skill in (False, True):
                    args = {"since": when(lo), "until": None if hi is None else when(hi),
                            "by_skill": by_skill}
                    assert (stats.compute(facts_with(part, start), **args)
                            == stats.compute(facts_with(whole, ""), **args)), (start, lo, hi)
        assert stats.review_marks(facts_with(part, start), start)["marks_t"] == [
            t for t in whole["marks_t"] if t >= start]
    now = datetime.now(UTC)
    expected = json.dumps(build(store, now=now, facts=facts_with(whole, "")), sort_keys=True)
    assert json.dumps(build(store, now=now), sort_keys=True) == expected
    saved = readmodels.views_dir(store) / "delegation-recent.json"
    assert json.loads(saved.read_bytes())["data"]["from"] <= stats.iso(now - timedelta(days=180))
    # a period reaching further back than the recent part reads the whole model
    long = build(store, now=now, since=timedelta(days=365))
    assert json.dumps(long, sort_keys=True) == json.dumps(
        build(store, now=now, since=timedelta(days=365), facts=facts_with(whole, "")),
        sort_keys=True)
    # a damaged or foreign recent part is never trusted: the report comes out the same
    good = saved.read_bytes()
    doc = json.loads(good)
    for forged in (dict(doc, data={"from": 5, "model": doc["data"]["model"]}),
                   dict(doc, data={"from": "", "model": [1]}), dict(doc, data=[1]),
                   dict(doc, version="delegation-0/recent-0")):
        saved.write_text(json.dumps(forged))
        assert json.dumps(build(store, now=now), sort_keys=True) == expected
    saved.write_bytes(good[: len(good) // 2])
    assert json.dumps(build(store, now=now), sort_keys=True) == expected
