"""The delegation report: does each delegation pay off?

:func:`build` returns one JSON-ready document (``retainer report --json``);
:func:`render_html` turns it into one self-contained HTML file with inline SVG charts
(spend against quality per contractor, the owner's review latency over time).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.errors import UsageError
from agent.stats import Facts, compute, median, model, parse_time, review_marks
from agent.store import Store
from agent.store.core import iso

TOTAL_KEYS = ("deliverables", "reviewed", "approved", "changes_requested", "unreviewed")


_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([hdwmy])\s*$")
_UNITS = {"h": 1 / 24, "d": 1, "w": 7, "m": 30, "y": 365}


def parse_since(text: str) -> timedelta:
    """``--since 90d`` (or ``12w``, ``6m``, ``1y``, ``36h``) as a period."""
    match = _SINCE.match(text.lower())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"--since takes a period like 90d, 12w, 6m or 1y, not {text!r}")
    days = float(match.group(1)) * _UNITS[match.group(2)]
    if days > 100 * 365:
        raise UsageError(f"--since {text}: at most 100y; the report compares the period "
                         "with the one before it")
    return timedelta(days=days)


def _totals(rows: dict[str, dict[str, Any]], facts: Facts, lo: datetime, hi: datetime
            ) -> dict[str, Any]:
    out: dict[str, Any] = {k: sum(r[k] for r in rows.values()) for k in TOTAL_KEYS}
    spends = [r["spend"] for r in rows.values() if r["spend"] is not None]
    out["spend"] = round(sum(spends), 2) if spends else None
    ratings = [(r["average_rating"], r["reviewed"]) for r in rows.values()
               if r["average_rating"] is not None]
    weight = sum(n for _, n in ratings)
    out["average_rating"] = round(sum(a * n for a, n in ratings) / weight, 2) if weight else None
    data = review_marks(facts, iso(lo) or "")
    at, stop = bisect_left(data["marks_t"], iso(lo) or ""), bisect_left(data["marks_t"], iso(hi) or "")
    changes = sum(data["marks_x"][at:stop])
    out["revision_rate"] = round(changes / (stop - at), 3) if stop > at else None
    out["median_review_latency_hours"] = _round1(median(_latencies(facts, lo, hi)))
    return out


def _latencies(facts: Facts, lo: datetime, hi: datetime) -> list[float]:
    """The latency of each deliverable's first review, for first reviews in the period."""
    slo, shi = iso(lo) or "", iso(hi) or ""
    return [value for at, value in review_marks(facts, slo)["first_reviews"]
            if slo <= at < shi and value is not None]


def _round1(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _trend(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    keys = ("deliverables", "spend", "average_rating", "revision_rate",
            "median_turnaround_hours", "median_review_latency_hours")
    out: dict[str, Any] = {}
    for key in keys:
        a, b = now.get(key), before.get(key)
        out[key] = None if a is None or b is None else round(a - b, 3)
    return out


def latency_series(facts: Facts, lo: datetime, hi: datetime) -> list[dict[str, Any]]:
    """Median review latency per week (weeks starting Monday) in the period."""
    first = review_marks(facts, iso(lo - timedelta(days=1)) or "")["first_reviews"]
    times = [at for at, _ in first]  # sorted: only a day either side of the period is parsed
    start = bisect_left(times, iso(lo - timedelta(days=1)) or "")
    stop = bisect_left(times, iso(hi + timedelta(days=1)) or "")
    weeks: dict[str, list[float]] = {}
    for reviewed_at, value in first[start:stop]:
        when = parse_time(reviewed_at)
        if when is None or not lo <= when < hi:
            continue
        if value is None:
            continue
        begins = (when - timedelta(days=when.weekday())).date().isoformat()
        weeks.setdefault(begins, []).append(value)
    return [{"week": w, "median_hours": round(median(v) or 0.0, 1), "reviews": len(v)}
            for w, v in sorted(weeks.items())]


Metrics = Callable[[datetime, datetime, bool], dict[str, dict[str, Any]]]


def build(store: Store, *, since: timedelta = timedelta(days=90), now: datetime | None = None,
          facts: Facts | None = None, metrics: Metrics | None = None) -> dict[str, Any]:
    """The report for ``[now - since, now)`` with trends against the period before.

    ``metrics(since, until, by_skill)`` answers as :func:`agent.stats.compute` of ``facts``
    does (the dashboard passes one that reuses what did not change)."""
    now = now or datetime.now(UTC)
    facts = facts or Facts.load(store)
    lo, prev_lo = now - since, now - 2 * since
    loaded = facts

    def computed(a: datetime, b: datetime, by_skill: bool) -> dict[str, dict[str, Any]]:
        return compute(loaded, since=a, until=b, by_skill=by_skill)

    if metrics is None:  # every window below starts at prev_lo or later: what it needs
        model(loaded, iso(prev_lo - timedelta(days=1)) or "")
    figures = metrics or computed
    current = figures(lo, now, False)
    previous = figures(prev_lo, lo, False)
    skills_now = figures(lo, now, True)
    skills_before = figures(prev_lo, lo, True)
    names = {c["id"]: c for c in facts.contractors}
    contractors = []
    for cid, row in current.items():
        doc = names[cid]
        before = previous.get(cid, {})
        contractors.append(dict(row, id=cid, name=doc["name"], status=doc.get("status"),
                                skills=doc.get("skills") or [], rate=doc.get("rate"),
                                previous=before, trend=_trend(row, before)))
    contractors.sort(key=lambda r: (-r["deliverables"], r["name"].lower()))
    skills = [dict(row, skill=key, previous=skills_before.get(key, {}),
                   trend=_trend(row, skills_before.get(key, {})))
              for key, row in sorted(skills_now.items())]
    totals = _totals(current, facts, lo, now)
    totals_before = _totals(previous, facts, prev_lo, lo)
    return {
        "generated_at": iso(now), "since": iso(lo), "until": iso(now),
        "previous": {"since": iso(prev_lo), "until": iso(lo)},
        "period_days": round(since.total_seconds() / 86400, 2),
        "totals": dict(totals, previous=totals_before, trend=_trend(totals, totals_before)),
        "contractors": contractors, "skills": skills,
        "review_latency": latency_series(facts, lo, now),
    }


# -- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;
background:#f5f7fa;margin:0;padding:32px}
main{max-width:1160px;margin:0 auto}
h1{font-size:26px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 12px}
.sub{color:#52606d;margin:0 0 24px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:12px}
.card{background:#fff;border-radius:10px;padding:14px 16px;box-shadow:0 1px 3px #0001}
.card b{display:block;font-size:24px}.card span{color:#52606d;font-size:13px}
.up{color:#1b7f4c}.down{color:#b42318}.flat{color:#7b8794}
.chart{background:#fff;border-radius:10px;padding:12px;box-shadow:0 1px 3px #0001}
table{border-collapse:collapse;width:100%;background:#fff;border-radius:10px;overflow:hidden;
box-shadow:0 1px 3px #0001;font-size:14px}
th,td{padding:7px 10px;text-align:right;border-bottom:1px solid #e4e7eb}
th:first-child,td:first-child{text-align:left}th{background:#f0f4f8;font-weight:600}
.empty{color:#7b8794;font-style:italic;padding:16px}
svg text{font-family:inherit}
"""

PALETTE = {"core": "#2563eb", "trial": "#d97706", "bench": "#7c3aed", "retired": "#9ca3af"}


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value:,}{unit}"


def _dur(hours: float | None) -> str:
    if hours is None:
        return "&ndash;"
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _delta(value: float | None, *, good_when_up: bool, unit: str = "") -> str:
    if value is None:
        return '<span class="flat">no earlier data</span>'
    if abs(value) < 1e-9:
        return '<span class="flat">± 0 vs previous</span>'
    cls = "up" if (value > 0) == good_when_up else "down"
    arrow = "▲" if value > 0 else "▼"
    shown = f"{abs(value):,.0f}" if float(value).is_integer() else f"{abs(value):,.1f}"
    return f'<span class="{cls}">{arrow} {shown}{unit} vs previous</span>'


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values from ``lo`` up to the first one at or above ``hi``."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = [start]
    while ticks[-1] < hi - 1e-9:
        ticks.append(round(start + len(ticks) * step, 6))
    return ticks


def _collides(x: float, y: float, placed: list[tuple[float, float]]) -> bool:
    return any(abs(x - px) < 110 and abs(y - py) < 15 for px, py in placed)


def scatter_svg(rows: list[dict[str, Any]], width: int = 1100, height: int = 420) -> str:
    """Spend (x) against average rating (y), one dot per contractor, sized by deliverables."""
    import html  # here: the JSON and text reports escape nothing

    pts = [r for r in rows if r.get("average_rating") is not None]
    left, right, top, bottom = 70, 30, 44, 60
    w, h = width - left - right, height - top - bottom
    max_spend = max([r["spend"] or 0 for r in pts] + [1.0])
    xticks = _ticks(0, max_spend * 1.05)
    xmax = max(xticks[-1], 1e-9)
    crowded = len(pts) > 60
    parts = [f'<svg id="spend-quality" role="img" aria-labelledby="sq-title" '
             f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">',
             '<title id="sq-title">Spend against quality per contractor</title>',
             f'<g transform="translate({left},{top})">']
    for t in xticks:
        x = t / xmax * w
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{h}" stroke="#e4e7eb"/>'
                     f'<text x="{x:.1f}" y="{h + 18}" text-anchor="middle" font-size="12" '
                     f'fill="#52606d">{t:,.0f}</text>')
    for level in range(1, 6):
        y = h - (level - 1) / 4 * h
        parts.append(f'<line x1="0" y1="{y:.1f}" x2="{w}" y2="{y:.1f}" stroke="#e4e7eb"/>'
                     f'<text x="-10" y="{y + 4:.1f}" text-anchor="end" font-size="12" '
                     f'fill="#52606d">{level}</text>')
    parts.append(f'<line x1="0" y1="{h}" x2="{w}" y2="{h}" stroke="#7b8794"/>'
                 f'<line x1="0" y1="0" x2="0" y2="{h}" stroke="#7b8794"/>')
    # the people worth naming: the biggest spend, then the most work; never overlapping
    wanted = sorted(pts, key=lambda r: (-(r["spend"] or 0), -(r["deliverables"] or 0)))
    placed: list[tuple[float, float]] = []
    labels = []
    for r in wanted[:12 if crowded else 40]:
        x = (r["spend"] or 0) / xmax * w
        y = h - (r["average_rating"] - 1) / 4 * h
        anchor_right = x > w - 140
        lx = x - 10 if anchor_right else x + 10
        if _collides(lx, y, placed):
            continue
        placed.append((lx, y))
        labels.append(f'<text x="{lx:.1f}" y="{y - 8:.1f}" font-size="12" fill="#1f2933" '
                      f'text-anchor="{"end" if anchor_right else "start"}" '
                      f'paint-order="stroke" stroke="#fff" stroke-width="3">'
                      f'{html.escape(r["name"])}</text>')
    for r in sorted(pts, key=lambda r: -(r["deliverables"] or 0)):
        x = (r["spend"] or 0) / xmax * w
        y = h - (r["average_rating"] - 1) / 4 * h
        size = math.sqrt(r["deliverables"] or 0)
        radius = 3 + min(4, size) if crowded else 5 + min(12, size * 2)
        color = PALETTE.get(r.get("status") or "", "#2563eb")
        tip = html.escape(f"{r['name']}: spend {r['spend'] or 0:,.0f}, "
                          f"rating {r['average_rating']}, {r['deliverables']} deliverables")
        parts.append(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" '
                     f'fill="{color}" fill-opacity="{0.35 if crowded else 0.6}" stroke="{color}">'
                     f'<title>{tip}</title></circle>')
    parts.extend(labels)
    if not pts:
        parts.append(f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" font-size="14" '
                     'fill="#7b8794">No rated work in this period yet</text>')
    parts.append(f'<text class="axis-label" x="{w / 2}" y="{h + 45}" text-anchor="middle" '
                 'font-size="13" fill="#1f2933">Spend in the period</text>')
    parts.append(f'<text class="axis-label" transform="translate(-48,{h / 2}) rotate(-90)" '
                 'text-anchor="middle" font-size="13" fill="#1f2933">Average rating (1 to 5)</text>')
    legend_x = w - 300
    for i, (status, color) in enumerate(PALETTE.items()):
        parts.append(f'<circle cx="{legend_x + i * 75}" cy="-26" r="5" fill="{color}"/>'
                     f'<text x="{legend_x + i * 75 + 9}" y="-22" font-size="12" '
                     f'fill="#52606d">{status}</text>')
    parts.append('<text x="0" y="-22" font-size="12" fill="#52606d">Dot size: deliverables. '
                 'Up and to the left is better value.</text>')
    parts.append("</g></svg>")
    return "".join(parts)


def latency_svg(series: list[dict[str, Any]], width: int = 1100, height: int = 320) -> str:
    """The owner's median review latency per week, as bars."""
    left, right, top, bottom = 70, 30, 20, 70
    w, h = width - left - right, height - top - bottom
    ymax = max([p["median_hours"] for p in series] + [1.0])
    yticks = _ticks(0, ymax, 4)
    top_tick = max(yticks[-1], 1e-9)
    parts = [f'<svg id="review-latency" role="img" aria-labelledby="rl-title" '
             f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">',
             '<title id="rl-title">Review latency over time</title>',
             f'<g transform="translate({left},{top})">']
    for t in yticks:
        y = h - t / top_tick * h
        parts.append(f'<line x1="0" y1="{y:.1f}" x2="{w}" y2="{y:.1f}" stroke="#e4e7eb"/>'
                     f'<text x="-10" y="{y + 4:.1f}" text-anchor="end" font-size="12" '
                     f'fill="#52606d">{t:g}</text>')
    n = max(len(series), 1)
    slot = w / n
    every = max(1, math.ceil(n / 12))
    for i, p in enumerate(series):
        bh = p["median_hours"] / top_tick * h
        bw = min(slot * 0.7, 56)
        x = i * slot + (slot - bw) / 2
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{h - bh:.1f}" width="{bw:.1f}" '
                     f'height="{bh:.1f}" rx="3" fill="#0ea5e9"><title>week of {p["week"]}: '
                     f'{p["median_hours"]} h median over {p["reviews"]} reviews</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{i * slot + slot / 2:.1f}" y="{h + 18}" text-anchor="middle" '
                         f'font-size="12" fill="#52606d">{p["week"][5:]}</text>')
    if not series:
        parts.append(f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" font-size="14" '
                     'fill="#7b8794">No reviews in this period yet</text>')
    parts.append(f'<line x1="0" y1="{h}" x2="{w}" y2="{h}" stroke="#7b8794"/>'
                 f'<line x1="0" y1="0" x2="0" y2="{h}" stroke="#7b8794"/>')
    parts.append(f'<text class="axis-label" x="{w / 2}" y="{h + 45}" text-anchor="middle" '
                 'font-size="13" fill="#1f2933">Week of review (month-day)</text>')
    parts.append(f'<text class="axis-label" transform="translate(-48,{h / 2}) rotate(-90)" '
                 'text-anchor="middle" font-size="13" fill="#1f2933">Median hours to review'
                 '</text>')
    parts.append("</g></svg>")
    return "".join(parts)


def _table(rows: list[dict[str, Any]], first: str, key: str, limit: int = 200) -> str:
    import html  # here: the JSON and text reports escape nothing

    if not rows:
        return '<div class="empty">Nothing in this period.</div>'
    head = (f"<tr><th>{first}</th><th>Deliverables</th><th>Spend</th><th>Avg rating</th>"
            "<th>Revision rate</th><th>Median turnaround</th><th>Review latency</th>"
            "<th>Trend (deliverables)</th></tr>")
    body = []
    for r in rows[:limit]:
        rev = r.get("revision_rate")
        trend = (r.get("trend") or {}).get("deliverables")
        body.append(
            f"<tr><td>{html.escape(str(r[key]))}</td><td>{r['deliverables']}</td>"
            f"<td>{_fmt(r.get('spend'), digits=0)}{'*' if r.get('spend_estimated') else ''}</td>"
            f"<td>{_fmt(r.get('average_rating'), digits=2)}</td>"
            f"<td>{_fmt(None if rev is None else rev * 100, '%', 0)}</td>"
            f"<td>{_dur(r.get('median_turnaround_hours'))}</td>"
            f"<td>{_dur(r.get('median_review_latency_hours'))}</td>"
            f"<td>{'&ndash;' if trend is None else f'{trend:+.0f}'}</td></tr>")
    more = (f'<div class="empty">… and {len(rows) - limit} more (see --json)</div>'
            if len(rows) > limit else "")
    return f"<table>{head}{''.join(body)}</table>{more}"


def render_html(report: dict[str, Any]) -> str:
    import html  # here: the JSON and text reports escape nothing

    t = report["totals"]
    trend = t["trend"]
    rev = t.get("revision_rate")
    cards = [
        ("Spend", _fmt(t.get("spend"), digits=0), _delta(trend.get("spend"), good_when_up=False)),
        ("Deliverables", _fmt(t["deliverables"]),
         _delta(trend.get("deliverables"), good_when_up=True)),
        ("Average rating", _fmt(t.get("average_rating"), digits=2),
         _delta(trend.get("average_rating"), good_when_up=True)),
        ("Revision rate", _fmt(None if rev is None else rev * 100, "%", 0),
         _delta(None if trend.get("revision_rate") is None else trend["revision_rate"] * 100,
                good_when_up=False, unit=" pts")),
        ("Your review latency", _dur(t.get("median_review_latency_hours")),
         _delta(trend.get("median_review_latency_hours"), good_when_up=False, unit=" h")),
        ("Waiting for review", _fmt(t["unreviewed"]), ""),
    ]
    card_html = "".join(f'<div class="card"><span>{html.escape(n)}</span><b>{v}</b>{d}</div>'
                        for n, v, d in cards)
    active = [r for r in report["contractors"] if r["deliverables"] or r.get("spend")]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Retainer delegation report</title><style>{_CSS}</style></head>
<body><main>
<h1>Delegation report</h1>
<p class="sub">{report['since'][:10]} to {report['until'][:10]} ({report['period_days']:g} days),
compared with the {report['period_days']:g} days before.
Generated {report['generated_at'][:16].replace('T', ' ')} UTC.</p>
<section class="cards">{card_html}</section>
<h2>Spend against quality per contractor</h2>
<div class="chart">{scatter_svg(report['contractors'])}</div>
<h2>Your review latency over time</h2>
<div class="chart">{latency_svg(report['review_latency'])}</div>
<h2>Per contractor</h2>
{_table(active, "Contractor", "name")}
<h2>Per kind of work</h2>
{_table(report['skills'], "Skill", "skill")}
<p class="sub">* estimated from the contractor's rate and the hours entered in reviews.</p>
</main></body></html>
"""


def write_html(report: dict[str, Any], path: Path) -> None:
    from agent.files import write_private

    write_private(path, render_html(report).encode("utf-8"))
