"""`retainer report` (the delegation report) and `retainer notify` (reminders once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from agent.cli.app import App
from agent.cli.output import Col, emit_json, table
from agent.humanize import hours, money, pct


@click.command("report")
@click.option("--since", "since", default="90d", show_default=True,
              help="The period: 30d, 12w, 6m, 1y. Trends compare with the period before.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write a self-contained HTML report with charts to this file.")
@click.pass_obj
def report(app: App, since: str, as_json: bool, html_path: Path | None) -> None:
    """Per contractor and per kind of work: spend, deliverables, ratings, revisions,
    turnaround and your own review latency, against the previous period."""
    from agent.report import build, parse_since, write_html

    period = parse_since(since)
    if html_path is not None and not html_path.parent.is_dir():
        from agent.errors import UsageError

        raise UsageError(f"--html {html_path}: there is no folder {html_path.parent}; "
                         "create it first or choose another path")
    doc = build(app.store(), since=period)
    if html_path is not None:
        write_html(doc, html_path)
    if as_json:
        emit_json(doc)
        return
    t = doc["totals"]
    click.echo(f"Delegation report {doc['since'][:10]} to {doc['until'][:10]}")
    click.echo(f"  {t['deliverables']} deliverables, spend {money(t['spend'])}, average rating "
               f"{'-' if t['average_rating'] is None else t['average_rating']},")
    click.echo(f"  revisions {pct(t['revision_rate'])}, your review latency "
               f"{hours(t['median_review_latency_hours'])}, {t['unreviewed']} waiting\n")
    active = [r for r in doc["contractors"] if r["deliverables"] or r.get("spend")]
    if active:
        _report_table(active, "name", "contractor")
        click.echo("")
        _report_table(doc["skills"], "skill", "skill")
    else:
        click.echo("No deliverables in this period.")
    if html_path is not None:
        click.echo(f"\nHTML report: {html_path}")


def _report_table(rows: list[dict[str, Any]], key: str, header: str) -> None:
    def trend(r: dict[str, Any]) -> str:
        value = (r.get("trend") or {}).get("deliverables")
        return "-" if value is None else f"{value:+.0f}"

    table([(r[key], r["deliverables"], money(r.get("spend")),
            "-" if r["average_rating"] is None else f"{r['average_rating']:.1f}",
            pct(r["revision_rate"]), hours(r["median_turnaround_hours"]),
            hours(r["median_review_latency_hours"]), trend(r)) for r in rows],
          [Col(header, flex=True), Col("work", right=True), Col("spend", right=True),
           Col("rating", right=True), Col("revisions", right=True, drop=2),
           Col("turnaround", right=True), Col("review latency", right=True, drop=1),
           Col("trend", right=True, drop=3)])




@click.command("notify")
@click.option("--dry-run", is_flag=True, help="Show what is due without sending it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def notify(app: App, dry_run: bool, as_json: bool) -> None:
    """Send due reminders through the configured [[notifiers]] once (the daemon does this
    every 15 minutes). Exit 1 if a notifier failed."""
    from agent.reminders import run_notifiers

    config = app.config(validate=False)
    results = run_notifiers(config, app.host, app.store(config), dry_run=dry_run)
    if as_json:
        emit_json([r.as_dict() for r in results])
    else:
        if not results:
            click.echo("No [[notifiers]] in the config.")
        for r in results:
            what = f"FAILED: {r.error}" if r.error else (
                f"{'due' if dry_run else 'sent'}: {', '.join(r.sent)}" if r.sent else "nothing due")
            click.echo(f"{r.notifier}: {what}")
    if any(r.error for r in results):
        raise SystemExit(1)


