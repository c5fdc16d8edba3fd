"""`retainer contractors`: the roster, candidates, and who should do a task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from agent.cli.app import App
from agent.cli.output import Col, emit_json, table
from agent.errors import ConfigError
from agent.humanize import ago, hours, money, pct

if TYPE_CHECKING:
    from agent.store import Store


def contractor_rows(store: Store) -> list[dict[str, Any]]:
    """Every contractor with contact dates and metrics (see :mod:`agent.stats`), by name."""
    from agent.stats import roster_rows

    return roster_rows(store)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def contractors(ctx: click.Context, as_json: bool) -> None:
    """The roster. Without a subcommand: list it."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(contractors_list, as_json=as_json)


@contractors.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def contractors_list(app: App, as_json: bool) -> None:
    """Every contractor: status, platforms, skills, rate, contact, work, quality, spend."""
    store = app.store()
    rows = contractor_rows(store)
    if as_json:
        emit_json(rows)
        return
    roster_table(rows)


@contractors.command("candidates")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--ignored", "show_ignored", is_flag=True,
              help="Only those ignored in the dashboard (hidden otherwise).")
@click.pass_obj
def contractors_candidates(app: App, as_json: bool, show_ignored: bool = False) -> None:
    """People who wrote but are not on the roster (promote them with `contractors add`)."""
    docs = sorted(app.store().candidates(ignored=show_ignored),
                  key=lambda d: d.get("last_seen") or "", reverse=True)
    if as_json:
        emit_json(docs)
        return
    table([(d["key"], d.get("name", ""), ago(d.get("last_seen"))) for d in docs],
          [Col("identity", flex=True), Col("name", flex=True), "last seen"])


@contractors.command("add")
@click.argument("who")
@click.option("--name", help="Display name (default: the name seen in their mail).")
@click.option("--email", "emails", multiple=True, help="Another address of theirs.")
@click.option("--skill", "skills", multiple=True, help="A skill (repeat for several).")
@click.option("--status", default="trial", show_default=True,
              type=click.Choice(["trial", "core", "bench", "retired"]))
@click.option("--rate", type=float, help="Hourly rate, for spend estimates.")
@click.option("--json", "as_json", is_flag=True, help="Print the contractor as JSON.")
@click.pass_obj
def contractors_add(app: App, who: str, name: str | None, emails: tuple[str, ...],
                    skills: tuple[str, ...], status: str, rate: float | None,
                    as_json: bool) -> None:
    """Add a contractor, or promote a candidate: WHO is an address, an identity
    (``upwork:~0123``) or, with --email, a name."""
    from agent.models import Identity

    store = app.store()
    with store.writing():
        roster = store.roster()
        idents: list[Identity] = []
        if "@" in who and ":" not in who:
            who = f"email:{who}"
        if ":" in who:
            platform, _, address = who.partition(":")
            known = roster.identities.get(who.lower())
            known_name = known["name"] if known else ""
            idents.append(Identity(platform, address, name=known_name))
            display = name or known_name or address
        else:
            display = name or who
        idents += [Identity("email", e) for e in emails]
        if not idents:
            raise ConfigError("give an address or identity, or a name with --email ADDRESS")
        doc = store.add_contractor(display, idents, status=status, skills=skills, rate=rate)
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"{doc['name']} ({doc['id']}) is on the roster as {doc['status']}")


@contractors.command("show")
@click.argument("who")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def contractors_show(app: App, who: str, as_json: bool) -> None:
    """One contractor: identities, recent messages and deliverables."""
    store = app.store()
    doc = store.find_contractor(who)
    row = next(r for r in contractor_rows(store) if r["id"] == doc["id"])
    msgs = store.messages(contractor=doc["id"])
    work = store.deliverables(contractor=doc["id"])
    if as_json:
        emit_json(dict(row, messages=len(msgs), deliverable_count=row.get("deliverables", 0),
                       deliverables=work, recent_messages=msgs[:20]))
        return
    rating = row.get("average_rating")
    click.echo(f"{row['name']} ({row['id']}), {row['status']}")
    click.echo(f"  identities: {', '.join(row.get('identities', []))}")
    click.echo(f"  skills: {', '.join(row.get('skills', [])) or '-'}; "
               f"rate {money(row.get('rate'), row.get('currency', ''))}")
    click.echo(f"  first contact {ago(row['first_contact'])}, last {ago(row['last_contact'])}")
    click.echo(f"  {len(msgs)} messages, {len(work)} deliverables, average rating "
               f"{'-' if rating is None else f'{rating:.1f}'}")
    click.echo(f"  revisions {pct(row.get('revision_rate'))}, median turnaround "
               f"{hours(row.get('median_turnaround_hours'))}, spend "
               f"{money(row.get('spend'), row.get('currency', ''))}"
               f"{' (estimated)' if row.get('spend_estimated') else ''}")
    for d in work[-10:]:
        click.echo(f"    {d['id']}  {d['filename']}  {d['review_status']}")


@contractors.command("status")
@click.argument("who")
@click.argument("new_status", type=click.Choice(["trial", "core", "bench", "retired"]))
@click.pass_obj
def contractors_status(app: App, who: str, new_status: str) -> None:
    """Change a contractor's status (trial, core, bench, retired)."""
    store = app.store()
    with store.writing():
        doc = store.update_contractor(store.find_contractor(who)["id"], status=new_status)
    click.echo(f"{doc['name']} is now {doc['status']}")


@contractors.command("demote")
@click.argument("who")
@click.pass_obj
def contractors_demote(app: App, who: str) -> None:
    """Take someone off the roster; their identities become candidates again."""
    store = app.store()
    with store.writing():
        doc = store.demote(who)
    click.echo(f"{doc['name']} is a candidate again")


@contractors.command("merge")
@click.argument("keep")
@click.argument("other")
@click.pass_obj
def contractors_merge(app: App, keep: str, other: str) -> None:
    """Merge OTHER into KEEP (one person on several platforms); history follows."""
    store = app.store()
    with store.writing():
        doc = store.merge_contractors(keep, other)
    click.echo(f"merged into {doc['name']} ({doc['id']}): {', '.join(doc['identities'])}")





def roster_table(rows: list[dict[str, Any]]) -> None:
    table([(r["id"], r["name"], r["status"], ", ".join(r["platforms"]),
            ", ".join(r.get("skills", [])), money(r.get("rate")), ago(r["first_contact"]),
            ago(r["last_contact"]), r.get("deliverables", 0),
            "-" if r.get("average_rating") is None else f"{r['average_rating']:.1f}",
            pct(r.get("revision_rate")), hours(r.get("median_turnaround_hours")),
            money(r.get("spend"), r.get("currency", "")) + ("*" if r.get("spend_estimated") else "")
            ) for r in rows],
          ["id", Col("name", flex=True), "status", Col("platforms", flex=True, drop=4),
           Col("skills", flex=True, drop=3), Col("rate", right=True, drop=5),
           Col("first", drop=6), "last", Col("work", right=True),
           Col("rating", right=True, drop=1), Col("revisions", right=True, drop=2),
           Col("turnaround", right=True, drop=2), Col("spend", right=True)])


@contractors.command("suggest")
@click.argument("task")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--limit", type=int, default=10, show_default=True)
@click.option("--include-retired", is_flag=True, help="Rank retired contractors too.")
@click.pass_obj
def contractors_suggest(app: App, task: str, as_json: bool, limit: int,
                        include_retired: bool) -> None:
    """Who on your team should do TASK? Ranked by skill, quality, reliability, recency."""
    from agent.stats import Facts, roster_rows
    from agent.suggest import rank

    store = app.store()
    facts = Facts.load(store)
    ranked = rank(task, roster_rows(store, facts), facts, include_retired=include_retired,
                  limit=limit)
    if as_json:
        emit_json({"task": task, "suggestions": ranked})
        return
    if not ranked:
        click.echo("Nobody on the roster yet: add contractors with `retainer contractors add`.")
        return
    table([(f"{r['score']:.2f}", r["name"], r["status"], ", ".join(r["skills"]),
            "-" if r["average_rating"] is None else f"{r['average_rating']:.1f}",
            pct(r["revision_rate"]), hours(r["median_turnaround_hours"]), r["deliverables"],
            money(r["cost_per_deliverable"]), money(r["rate"]), ago(r["last_contact"]))
           for r in ranked],
          [Col("score", right=True), Col("name", flex=True), Col("status", drop=3),
           Col("skills", flex=True), Col("rating", right=True),
           Col("revisions", right=True, drop=2), Col("turnaround", right=True, drop=2),
           Col("work", right=True), Col("cost/piece", right=True, drop=1),
           Col("rate", right=True, drop=4), Col("last", drop=5)])
    if all(r["parts"]["skill"] == 0 for r in ranked):
        click.echo(f'\nNobody has done "{task}" yet; these are your best people overall.')


