"""The dashboard's pages. Reads go through the store's public methods and the workflow
modules (:mod:`agent.review`, :mod:`agent.stats`, :mod:`agent.suggest`,
:mod:`agent.instructions`, :mod:`agent.report`); every write holds :meth:`Store.writing`."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from flask import Flask, Response, abort, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup

from agent.errors import ConfigError, RetainerError, StoreError
from agent.files import write_private
from agent.stats import parse_time
from agent.store import Store
from agent.web import WebContext
from agent.web import previews as pv

if TYPE_CHECKING:
    from agent.config import Config
    from agent.configfile import QuickConfig
    from agent.web.cache import StoreAccess

log = logging.getLogger("retainer.web")

PAGE_SIZE = 50
KINDS = ("image", "pdf", "text", "file", "link")
SORTS = ("name", "status", "rate", "deliverables", "average_rating", "revision_rate",
         "median_turnaround_hours", "spend", "last_contact")


def _file_kind(doc: dict[str, Any]) -> str:
    kind = pv.kind_of(doc)
    if kind in ("text", "markdown"):
        return "text"
    if kind == "none":
        return "link"
    return "file" if kind == "download" else kind


def _next_url(default: str) -> str:
    """Where a form goes back to: a path on this site only."""
    target = request.form.get("next") or ""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def _int_or_none(value: str | None, lo: int, hi: int, what: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        number = int(value)
    except ValueError:
        raise StoreError(f"{what} is a whole number from {lo} to {hi}") from None
    if not lo <= number <= hi:
        raise StoreError(f"{what} is a whole number from {lo} to {hi}")
    return number


def _float_or_none(value: str | None, what: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise StoreError(f"{what} is a number, like 120 or 2.5") from None
    if not math.isfinite(number) or number < 0:
        raise StoreError(f"{what} is a number of zero or more")
    return number


def register(app: Flask, ctx: WebContext, access: StoreAccess) -> None:
    app.secret_key = ctx.token + ":session"
    app.config.update(SESSION_COOKIE_NAME=f"retainer_session_{ctx.port}",
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True)

    def quick() -> QuickConfig:
        from agent.configfile import quick_config

        return quick_config(ctx.config_path)

    def full_config(*, validate: bool) -> Config:
        from agent.config import load_config

        return load_config(ctx.config_path, ctx.host if validate else None)

    # -- shared reads (memoized per state of the store, see agent.web.cache) -------------

    def stamp() -> Any:
        if "stamp" not in g:
            g.stamp = access.fingerprint()
        return g.stamp

    def facts_of(store: Store, at: Any) -> Any:
        from agent.stats import Facts

        return access.memo("facts", lambda: Facts.load(store), at)

    def roster_of(store: Store, at: Any) -> list[dict[str, Any]]:
        from agent.stats import roster_rows as rows

        return access.memo(  # type: ignore[no-any-return]
            "roster", lambda: rows(store, facts_of(store, at)), at)

    def queue_of(store: Store, at: Any, overdue_after: timedelta) -> dict[str, dict[str, Any]]:
        from agent.review import queue

        def compute() -> dict[str, dict[str, Any]]:
            rows = {}
            for row in queue(store, overdue_after=overdue_after):
                row["file_kind"] = _file_kind(row)
                row["preview"] = pv.kind_of(row)
                received = parse_time(row.get("received_at"))
                row["_ts"] = received.timestamp() if received else None
                rows[row["id"]] = row
            return rows

        return access.memo(f"queue:{overdue_after.total_seconds()}", compute, at)  # type: ignore[no-any-return]

    def deliverables_of(store: Store, at: Any) -> dict[str, dict[str, Any]]:
        return access.memo(  # type: ignore[no-any-return]
            "deliverables", lambda: {d["id"]: d for d in store.deliverables()}, at)

    def messages_of(store: Store, at: Any) -> dict[str, list[dict[str, Any]]]:
        return access.memo("messages", lambda: _messages_by_contractor(store), at)  # type: ignore[no-any-return]

    def report_of(store: Store, at: Any, period: timedelta) -> dict[str, Any]:
        from agent.report import build

        return access.memo(f"report:{period.total_seconds()}",  # type: ignore[no-any-return]
                           lambda: build(store, since=period, facts=facts_of(store, at)), at)

    def facts() -> Any:
        return facts_of(access.store, stamp())

    def roster_rows() -> list[dict[str, Any]]:
        return roster_of(access.store, stamp())

    def queue_rows(overdue_after: timedelta) -> dict[str, dict[str, Any]]:
        return queue_of(access.store, stamp(), overdue_after)

    def all_deliverables() -> dict[str, dict[str, Any]]:
        return deliverables_of(access.store, stamp())

    def deliverable(ref: str) -> dict[str, Any]:
        """One deliverable by id (from the memo), else by prefix (from the store)."""
        found = all_deliverables().get(ref)
        return found if found is not None else dict(access.store.deliverable(ref))

    def warm(store: Store) -> None:
        """What the next pages need, computed ahead (agent.web.cache runs it after writes)."""
        from agent.configfile import quick_config

        at = access.fingerprint()
        queue_of(store, at, quick_config(ctx.config_path).review_overdue)
        deliverables_of(store, at)
        roster_of(store, at)
        report_of(store, at, timedelta(days=90))
        messages_of(store, at)

    access.set_warmer(warm)

    def reviewed(docs: Sequence[Mapping[str, Any]], at_before: Any) -> None:
        """Inside a write: patch the memos a review changes, so the queue stays warm."""
        for key, data in access.entries(at_before):
            if key == "deliverables":
                for doc in docs:
                    old = data.get(doc["id"])
                    if old is not None:
                        data[doc["id"]] = dict(old, review_status=doc["review_status"],
                                               review=doc["review"])
                access.patched(key)
            elif key.startswith("queue:"):
                for doc in docs:
                    if doc["review_status"] != "unreviewed":
                        data.pop(doc["id"], None)
                access.patched(key)
            elif key == "messages":
                access.patched(key)

    def unchanged(*keys: str) -> None:
        """Inside a write: these memos do not depend on what is written."""
        for key in keys:
            access.patched(key)

    def ignored_path() -> Path:
        from agent.web.security import web_dir

        return web_dir(ctx.data_dir) / "ignored.json"

    def ignored() -> set[str]:
        try:
            return set(orjson.loads(ignored_path().read_bytes()))
        except (FileNotFoundError, orjson.JSONDecodeError, TypeError):
            return set()

    # -- the review queue ------------------------------------------------------------------

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("queue_page"))  # type: ignore[return-value]

    @app.get("/queue")
    def queue_page() -> str:
        with ctx.lock:
            config = quick()
            rows = list(queue_rows(config.review_overdue).values())
            names = {c["id"]: c["name"] for c in access.store.contractors()}
        wanted = {k: request.args.get(k, "") for k in ("contractor", "source", "kind")}
        only_overdue = request.args.get("overdue") == "1"
        late_before = time.time() - config.review_overdue.total_seconds()
        late = {r["id"] for r in rows if r["_ts"] is not None and r["_ts"] < late_before}
        shown = [r for r in rows
                 if (not wanted["contractor"] or r.get("contractor_id") == wanted["contractor"])
                 and (not wanted["source"] or r.get("source") == wanted["source"])
                 and (not wanted["kind"] or r["file_kind"] == wanted["kind"])
                 and (not only_overdue or r["id"] in late)]
        pages = max(1, math.ceil(len(shown) / PAGE_SIZE))
        page = min(max(1, request.args.get("page", 1, type=int) or 1), pages)
        items = [dict(r, overdue=r["id"] in late)
                 for r in shown[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]]
        filters = {k: v for k, v in wanted.items() if v}
        if only_overdue:
            filters["overdue"] = "1"
        here = url_for("queue_page") + "?" + urlencode(
            dict(filters, page=str(page)) if page > 1 else filters)
        contractors = sorted({(r.get("contractor_id") or "", names.get(r.get("contractor_id") or "")
                               or "(not on the roster)") for r in rows}, key=lambda p: p[1].lower())
        return render_template(
            "queue.html", title="Review queue", items=items, total=len(rows), shown=len(shown),
            overdue=len(late), page=page, pages=pages,
            filters=filters, wanted=wanted, only_overdue=only_overdue, here=here,
            contractors=contractors, sources=sorted({r["source"] for r in rows}), kinds=KINDS,
            overdue_after=_duration(config.review_overdue), query=urlencode(filters))

    @app.get("/queue/<deliverable_id>")
    def item_page(deliverable_id: str) -> str:
        with ctx.lock:
            config = quick()
            doc = deliverable(deliverable_id)
            names = {c["id"]: c["name"] for c in access.store.contractors()}
            row = queue_rows(config.review_overdue).get(doc["id"])
        late_before = time.time() - config.review_overdue.total_seconds()
        item = dict(row, overdue=row["_ts"] is not None and row["_ts"] < late_before) if row \
            else dict(doc, contractor=names.get(doc.get("contractor_id") or ""), overdue=False,
                      age_hours=None, task=doc.get("title") or "")
        item["preview"] = pv.kind_of(doc)
        text = None
        if item["preview"] in ("text", "markdown"):
            path = _file_path(ctx, doc)
            try:
                text = pv.text_preview(path, item["preview"]) if path else None
            except pv.PreviewError as exc:
                text = Markup("<p class=muted>{}</p>").format(str(exc))
        return render_template("item.html", title=doc["filename"], item=item, text=text,
                               here=url_for("item_page", deliverable_id=doc["id"]),
                               next=request.args.get("next") or url_for("queue_page"))

    @app.post("/queue/<deliverable_id>/review")
    def review_item(deliverable_id: str) -> Any:
        from agent.review import feedback_text, outgoing_for, render_outgoing
        from agent.review import send as send_outgoing
        from agent.store import workflow as wf

        action = request.form.get("action", "")
        if action not in ("approve", "changes"):
            raise StoreError("choose Approve or Request changes")
        status = "approved" if action == "approve" else "changes_requested"
        rating = _int_or_none(request.form.get("rating"), 1, 5, "the rating")
        feedback = request.form.get("feedback", "")[:20_000]
        cost = _float_or_none(request.form.get("cost"), "the cost")
        hours = _float_or_none(request.form.get("hours"), "the hours")
        send = request.form.get("send") == "1"
        back = _next_url(url_for("queue_page"))
        with ctx.lock:
            current = deliverable(deliverable_id)
            prepared = None
            if send:
                text = feedback_text(current, status, rating, feedback)
                prepared = outgoing_for(access.store, current, text)
            if prepared is not None and request.form.get("confirm") != "1":
                return render_template(
                    "confirm.html", title="Send this reply?", item=current, status=status,
                    preview=render_outgoing(*prepared), form=request.form, back=back,
                    action_url=url_for("review_item", deliverable_id=current["id"]))
            sent_entry = None
            if prepared is not None:  # send first: a failed send records nothing
                outgoing, source = prepared
                remote_id = send_outgoing(full_config(validate=True), ctx.host, access.store,
                                          source, outgoing)
                sent_entry = {
                    "kind": "feedback", "source": source, "to": outgoing.to.key,
                    "subject": outgoing.subject, "text": outgoing.text,
                    "in_reply_to": outgoing.in_reply_to,
                    "references": list(outgoing.references), "remote_id": remote_id,
                    "deliverable_id": current["id"], "contractor_id": current.get("contractor_id"),
                }
            with access.writing() as store:
                before = access.fingerprint()
                docs = wf.record_reviews(store, [(current, {
                    "status": status, "rating": rating, "feedback": feedback, "cost": cost,
                    "hours": hours, "when": None})])
                if sent_entry is not None:
                    wf.record_sent(store, sent_entry, deliverable_id=current["id"])
                    docs = [store.stored_deliverable(current["id"]) or docs[0]]
                reviewed(docs, before)
        verdict = "approved" if status == "approved" else "changes requested"
        flash(f"{current['filename']}: {verdict}" + (f", {rating}/5" if rating else "")
              + ("; the reply was sent" if sent_entry else ""))
        return redirect(back, 303)

    @app.post("/queue/bulk")
    def bulk_approve() -> Any:
        from agent.store import workflow as wf

        ids = request.form.getlist("ids")
        rating = _int_or_none(request.form.get("rating"), 1, 5, "the rating")
        back = _next_url(url_for("queue_page"))
        if not ids:
            flash("Tick the items to approve first.")
            return redirect(back, 303)
        with ctx.lock:
            config = quick()
            waiting = queue_rows(config.review_overdue)
            chosen = [waiting[i] for i in dict.fromkeys(ids) if i in waiting]
            with access.writing() as store:
                before = access.fingerprint()
                docs = wf.record_reviews(store, [(doc, {
                    "status": "approved", "rating": rating, "feedback": "", "when": None})
                    for doc in chosen])
                reviewed(docs, before)
        flash(f"Approved {len(chosen)} item{'s' if len(chosen) != 1 else ''}"
              + (f" ({len(ids) - len(chosen)} were already reviewed)" if len(chosen) < len(ids)
                 else ""))
        return redirect(back, 303)

    # -- files and previews ------------------------------------------------------------------

    @app.get("/files/<deliverable_id>")
    def download(deliverable_id: str) -> Response:
        from flask import send_file

        with ctx.lock:
            doc = deliverable(deliverable_id)
        path = _file_path(ctx, doc)
        if path is None:
            abort(404, "this deliverable has no stored file (too large, or a link)")
        response = send_file(path, mimetype="application/octet-stream", as_attachment=True,
                             download_name=doc["filename"] or "deliverable", conditional=False,
                             max_age=0)
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response

    @app.get("/preview/<deliverable_id>.png")
    def preview_image(deliverable_id: str) -> Response:
        with ctx.lock:
            doc = deliverable(deliverable_id)
        kind = pv.kind_of(doc)
        path = _file_path(ctx, doc)
        if kind not in ("image", "pdf") or path is None:
            abort(404, "no image preview for this file")
        try:
            data = pv.thumbnail(path, kind, request.args.get("size", "thumb"))
        except pv.PreviewError:
            data = pv.placeholder()
        response = Response(data, mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=3600"
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response

    # -- contractors ------------------------------------------------------------------------

    @app.get("/contractors")
    def roster_page() -> str:
        from agent.suggest import rank

        sort = request.args.get("sort", "name")
        sort = sort if sort in SORTS else "name"
        descending = request.args.get("order", "asc") == "desc"
        task = request.args.get("task", "").strip()[:200]
        with ctx.lock:
            rows = list(roster_rows())
            suggestions = access.memo(  # ranking reads every deliverable: once per task
                f"suggest:{task.lower()}", lambda: rank(task, rows, facts()), stamp()) \
                if task else []

        def key(row: dict[str, Any]) -> tuple[bool, Any]:
            value = row.get(sort)
            if isinstance(value, str):
                value = value.lower()
            return (value is None) != descending, value if value is not None else 0

        rows.sort(key=lambda r: r["name"].lower())
        rows.sort(key=key, reverse=descending)
        return render_template("roster.html", title="Roster", rows=rows, sort=sort,
                               descending=descending, task=task, suggestions=suggestions)

    @app.get("/contractors/<contractor_id>")
    def contractor_page(contractor_id: str) -> str:
        from agent.store import workflow as wf

        with ctx.lock:
            store = access.store
            doc = store.find_contractor(contractor_id)
            cid = doc["id"]
            row = next((r for r in roster_rows() if r["id"] == cid), dict(doc))
            roster = store.roster()
            identities = [roster.identities.get(k, {"key": k}) for k in doc.get("identities", [])]
            work = [d for d in all_deliverables().values() if d.get("contractor_id") == cid]
            messages = messages_of(store, stamp()).get(cid, [])
            reviews = [r for r in facts().reviews if r.get("contractor_id") == cid]
            sent = [s for s in wf.sent_instructions(store) if s.get("contractor_id") == cid]
            templates = wf.templates(store)
        timeline = sorted(
            [{"at": m.get("sent_at") or "", "what": "message", "doc": m} for m in messages]
            + [{"at": d.get("received_at") or "", "what": "deliverable", "doc": d} for d in work]
            + [{"at": s.get("sent_at") or "", "what": "instruction", "doc": s} for s in sent],
            key=lambda e: str(e["at"]), reverse=True)[:150]
        return render_template("contractor.html", title=doc["name"], c=doc, row=row,
                               identities=identities, timeline=timeline, reviews=reviews[-50:],
                               sent=sent, templates=templates, work_count=len(work),
                               message_count=len(messages))

    @app.post("/contractors/<contractor_id>/status")
    def contractor_status(contractor_id: str) -> Any:
        from agent.models import CONTRACTOR_STATUSES

        status = request.form.get("status", "")
        if status not in CONTRACTOR_STATUSES:
            raise StoreError(f"a status is one of {', '.join(CONTRACTOR_STATUSES)}")
        with ctx.lock, access.writing() as store:
            doc = store.update_contractor(store.find_contractor(contractor_id)["id"],
                                          status=status)
            unchanged("messages", "deliverables")
        flash(f"{doc['name']} is now {doc['status']}")
        return redirect(url_for("contractor_page", contractor_id=doc["id"]), 303)

    @app.post("/contractors/<contractor_id>/task")
    def contractor_task(contractor_id: str) -> Any:
        from agent.instructions import fill, outgoing, parse_sets, route_for, values_for
        from agent.review import render_outgoing
        from agent.review import send as send_outgoing
        from agent.store import workflow as wf

        mode = request.form.get("mode", "send")
        with ctx.lock:
            store = access.store
            contractor = store.find_contractor(contractor_id)
            doc = wf.template(store, request.form.get("template", ""))
            version = doc["versions"][-1]
            task = request.form.get("task", "").strip() or doc["name"]
            sets = tuple(line.strip() for line in request.form.get("sets", "").splitlines()
                         if line.strip())
            values = values_for(contractor, task, parse_sets(sets))
            text = fill(version["text"], values)
            subject = fill(doc["subject"], values) if doc.get("subject") else task
            entry: dict[str, Any] = {
                "template": doc["name"], "version": version["version"],
                "skill": doc.get("skill"), "contractor_id": contractor["id"],
                "contractor_name": contractor["name"], "task": task, "subject": subject,
                "text": text, "sent": mode == "send",
            }
            message = None
            route = None
            if mode == "send":
                route = route_for(contractor, store.messages(contractor=contractor["id"]))
                message = outgoing(route[1], subject, text, route[2])
            if request.form.get("confirm") != "1":
                return render_template(
                    "task_confirm.html", title="Send this task?", c=contractor, mode=mode,
                    text=text, preview=render_outgoing(message, route[0]) if message and route
                    else None, form=request.form)
            if message is not None and route is not None:
                entry.update(source=route[0], to=message.to.key,
                             remote_id=send_outgoing(full_config(validate=True), ctx.host, store,
                                                     route[0], message))
            with access.writing() as wstore:
                saved = wf.record_instruction(wstore, entry)
                unchanged("messages", "deliverables", "queue:")
        flash(f"{doc['name']} v{version['version']} "
              f"{'sent' if mode == 'send' else 'recorded'} to {contractor['name']} ({saved['id']})")
        return redirect(url_for("contractor_page", contractor_id=contractor["id"]), 303)

    # -- candidates ---------------------------------------------------------------------------

    @app.get("/candidates")
    def candidates_page() -> str:
        show_ignored = request.args.get("ignored") == "1"
        with ctx.lock:
            hidden = ignored()
            docs = sorted(access.store.candidates(), key=lambda d: d.get("last_seen") or "",
                          reverse=True)
        shown = [d for d in docs if (d["key"] in hidden) == show_ignored]
        return render_template("candidates.html", title="Candidates", docs=shown[:500],
                               total=len(shown), hidden=len(hidden & {d["key"] for d in docs}),
                               show_ignored=show_ignored)

    @app.post("/candidates/promote")
    def promote() -> Any:
        from agent.models import CONTRACTOR_STATUSES, Identity

        key = request.form.get("key", "").strip().lower()
        status = request.form.get("status", "trial")
        if status not in CONTRACTOR_STATUSES:
            raise StoreError(f"a status is one of {', '.join(CONTRACTOR_STATUSES)}")
        skills = [s.strip() for s in request.form.get("skills", "").split(",") if s.strip()]
        rate = _float_or_none(request.form.get("rate"), "the rate")
        with ctx.lock, access.writing() as store:
            seen = store.roster().identities.get(key)
            if seen is None or seen.get("contractor_id"):
                raise StoreError(f"{key} is not a candidate (any more); reload the page")
            platform, _, address = key.partition(":")
            name = request.form.get("name", "").strip() or seen.get("name") or address
            doc = store.add_contractor(name, [Identity(platform, address, name=name)],
                                       status=status, skills=skills, rate=rate)
        flash(f"{doc['name']} is on the roster as {doc['status']}")
        return redirect(_next_url(url_for("candidates_page")), 303)

    @app.post("/candidates/ignore")
    def ignore() -> Any:
        key = request.form.get("key", "").strip().lower()
        undo = request.form.get("undo") == "1"
        with ctx.lock, access.writing():
            keys = ignored()
            if undo:
                keys.discard(key)
            else:
                keys.add(key)
            write_private(ignored_path(), orjson.dumps(sorted(keys)))
        flash(f"{key} is {'shown again' if undo else 'ignored'}")
        return redirect(_next_url(url_for("candidates_page")), 303)

    # -- report -----------------------------------------------------------------------------

    def report_doc(since_text: str) -> dict[str, Any]:
        from agent.report import parse_since

        return report_of(access.store, stamp(), parse_since(since_text))

    @app.get("/report")
    def report_page() -> str:
        since = request.args.get("since", "90d")
        with ctx.lock:
            doc = report_doc(since)
        active = [r for r in doc["contractors"] if r["deliverables"] or r.get("spend")]
        return render_template("report.html", title="Report", r=doc, since=since,
                               active=active[:200], more=max(0, len(active) - 200))

    @app.get("/report/<chart>.svg")
    def report_chart(chart: str) -> Response:
        from agent.report import latency_svg, scatter_svg

        with ctx.lock:
            doc = report_doc(request.args.get("since", "90d"))
        if chart == "scatter":
            svg = scatter_svg(doc["contractors"])
        elif chart == "latency":
            svg = latency_svg(doc["review_latency"])
        else:
            abort(404)
        response = Response(svg, mimetype="image/svg+xml")
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return response

    # -- sources --------------------------------------------------------------------------------

    @app.get("/sources")
    def sources_page() -> str:
        config = full_config(validate=False)
        with ctx.lock:
            states = access.store.source_states()
            counts = access.store.counts()
        rows = []
        for source in config.sources:
            state = states.get(source.name, {})
            rows.append(dict(state, source=source.name, platform=source.platform,
                             enabled=source.enabled, every=_every(source.every),
                             syncing=ctx.syncing.get(source.name)))
        return render_template("sources.html", title="Sources", rows=rows, counts=counts)

    @app.post("/sources/<name>/sync")
    def sync_now(name: str) -> Any:
        config = full_config(validate=False)
        source = config.source(name)
        if not source.enabled:
            raise ConfigError(f"source {name} is disabled in the config; enable it first")
        with ctx.lock:
            if ctx.syncing.get(name) == "running":
                flash(f"{name} is already syncing")
                return redirect(url_for("sources_page"), 303)
            ctx.syncing[name] = "running"
        threading.Thread(target=_sync_in_background, args=(ctx, name), daemon=True,
                         name=f"retainer-web-sync-{name}").start()
        flash(f"Syncing {name} in the background; reload to see the result")
        return redirect(url_for("sources_page"), 303)

    # -- instruction templates ------------------------------------------------------------------

    @app.get("/templates")
    def templates_page() -> str:
        from agent.instructions import STARTER
        from agent.store import workflow as wf

        with ctx.lock:
            docs = wf.templates(access.store)
            sent = wf.sent_instructions(access.store)
        counts: dict[str, int] = {}
        for s in sent:
            counts[s.get("template", "")] = counts.get(s.get("template", ""), 0) + 1
        return render_template("templates.html", title="Instruction templates", docs=docs,
                               counts=counts, starter=STARTER)

    @app.get("/templates/<name>")
    def template_page(name: str) -> str:
        from agent.instructions import placeholders
        from agent.store import workflow as wf

        with ctx.lock:
            doc = wf.template(access.store, name)
        versions = {v["version"]: v for v in doc["versions"]}
        wanted = request.args.get("version", type=int) or doc["versions"][-1]["version"]
        shown = versions.get(wanted)
        if shown is None:
            raise StoreError(f"{doc['name']} has versions 1 to {len(versions)}")
        return render_template("template.html", title=doc["name"], doc=doc, shown=shown,
                               placeholders=placeholders(shown["text"]),
                               rendered=pv.markdown(shown["text"]))

    @app.post("/templates")
    def template_save() -> Any:
        from agent.store import workflow as wf

        name = request.form.get("name", "").strip()
        text = request.form.get("text", "").replace("\r\n", "\n")
        if not text.strip():
            raise StoreError("a template needs some text")
        skill = request.form.get("skill", "").strip() or None
        subject = request.form.get("subject", "").strip() or None
        with ctx.lock, access.writing() as store:
            if request.form.get("new") == "1" and any(
                    t["name"] == name.lower() for t in wf.templates(store)):
                raise StoreError(f'a template "{name}" exists; open it to edit it')
            doc = wf.save_template(store, name, text, skill=skill, subject=subject)
            unchanged("messages", "deliverables", "queue:", "facts", "roster", "report:")
        flash(f"{doc['name']}: version {doc['versions'][-1]['version']} saved")
        return redirect(url_for("template_page", name=doc["name"]), 303)


def _every(value: timedelta) -> str:
    """A sync interval as people say it: 90 s, 5 min, 2 h, 1 d."""
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _duration(value: timedelta) -> str:
    from agent.web.filters import hours

    return hours(value.total_seconds() / 3600)


def _messages_by_contractor(store: Store, limit: int = 200) -> dict[str, list[dict[str, Any]]]:
    """Each contractor's newest messages (the fields the timeline shows), in one pass."""
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in store.iter_messages():
        cid = doc.get("contractor_id")
        if cid:
            out.setdefault(cid, []).append({k: doc.get(k) for k in (
                "id", "sent_at", "direction", "subject", "source")})
    for docs in out.values():
        docs.sort(key=lambda d: d.get("sent_at") or "", reverse=True)
        del docs[limit:]
    return out


def _file_path(ctx: WebContext, doc: dict[str, Any]) -> Path | None:
    """The deliverable's stored file, only when it is inside the data folder."""
    raw = doc.get("path")
    if not raw:
        return None
    path = Path(raw)
    if not path.is_absolute():
        path = ctx.data_dir / path
    try:
        resolved = path.resolve(strict=True)
        resolved.relative_to(Path(ctx.data_dir).resolve())
    except (OSError, ValueError):
        return None
    return resolved if resolved.is_file() else None


def _sync_in_background(ctx: WebContext, name: str) -> None:
    """``retainer sync NAME`` on its own Store (the file lock orders it with other writers)."""
    from agent.config import load_config
    from agent.store import Store
    from agent.sync import SyncEngine

    try:
        config = load_config(ctx.config_path, ctx.host, only={name})
        engine = SyncEngine(config, ctx.host, Store(config.data_dir))
        results = engine.sync_all([name])
        failed = [r for r in results if not r.ok]
        ctx.syncing[name] = f"failed: {failed[0].error}" if failed else "done"
    except RetainerError as exc:
        ctx.syncing[name] = f"failed: {exc}"
    except Exception as exc:  # a background thread must not die silently
        log.exception("sync of %s from the dashboard failed", name)
        ctx.syncing[name] = f"failed: {type(exc).__name__}"
