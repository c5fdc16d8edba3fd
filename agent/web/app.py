"""The Flask application: guards, the store, and the pages (see :mod:`agent.web.pages`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from agent.errors import RetainerError
from agent.web import security as sec
from agent.web.cache import StoreAccess
from agent.web.context import WebContext

STATIC = Path(__file__).with_name("static")
TEMPLATES = Path(__file__).with_name("templates")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def build(ctx: WebContext) -> Flask:
    app = Flask("agent.web", static_folder=str(STATIC), template_folder=str(TEMPLATES),
                static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=2 * 1024 * 1024, TEMPLATES_AUTO_RELOAD=False,
                      SEND_FILE_MAX_AGE_DEFAULT=0)
    app.jinja_env.autoescape = True  # every template, whatever its name
    access = StoreAccess(ctx.data_dir, ctx.lock)
    app.extensions["retainer"] = (ctx, access)
    csrf = sec.csrf_for(ctx.token)
    cookie = sec.cookie_name(ctx.port)

    @app.before_request
    def guard() -> Any:
        g.started = time.perf_counter()
        g.cpu = time.thread_time()
        if not _host_allowed(ctx, request.host):
            abort(400, "unknown Host header: open the dashboard by the URL retainer printed")
        given = (request.cookies.get(cookie) or request.args.get("token")
                 or _bearer(request.headers.get("Authorization", "")))
        if not sec.same(given, ctx.token):
            return _denied()
        if request.method not in SAFE_METHODS:
            if not _same_origin(request):
                abort(403, "cross-site request refused")
            if not sec.same(request.form.get("csrf"), csrf):
                abort(403, "the form's CSRF token is missing or wrong: reload the page")
        if request.method == "GET" and request.args.get("token") and \
                request.cookies.get(cookie) != ctx.token:
            args = request.args.to_dict(flat=False)
            args.pop("token", None)
            from urllib.parse import urlencode

            target = request.path + (f"?{urlencode(args, doseq=True)}" if args else "")
            response = redirect(target, 303)
            response.set_cookie(cookie, ctx.token, httponly=True, samesite="Strict",
                                path="/", max_age=60 * 60 * 24 * 400)
            return response
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        h = response.headers
        h.setdefault("Content-Security-Policy", sec.CSP)
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "same-origin"  # no-referrer would make Origin "null"
        h["X-Frame-Options"] = "DENY"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        h.setdefault("Cache-Control", "no-store")
        if "started" in g:  # wall time, and this thread's CPU time (less noisy when busy)
            h["Server-Timing"] = (f"app;dur={(time.perf_counter() - g.started) * 1000:.1f}, "
                                  f"cpu;dur={(time.thread_time() - g.cpu) * 1000:.1f}")
        return response

    @app.context_processor
    def common() -> dict[str, Any]:
        return {"csrf": csrf, "now": datetime.now(UTC), "nav": request.endpoint or ""}

    @app.errorhandler(RetainerError)
    def domain_error(exc: RetainerError) -> tuple[str, int]:
        from agent.secrets import scrub

        return render_template("error.html", title="Something needs your attention",
                               message=scrub(str(exc))), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[str, int]:
        return render_template("error.html", title=f"{exc.code} {exc.name}",
                               message=exc.description or ""), exc.code or 500

    from agent.web import filters, pages

    filters.register(app)
    pages.register(app, ctx, access)  # it starts reading the store ahead (StoreAccess.warm)
    return app


def _denied() -> tuple[str, int, dict[str, str]]:
    body = ("<!doctype html><html lang=en><meta charset=utf-8><title>Retainer: sign in</title>"
            "<link rel=stylesheet href=/static/app.css><main class=narrow><h1>Retainer</h1>"
            "<p>This dashboard needs its access token. Open the full URL that "
            "<code>retainer serve</code> printed (it ends in <code>?token=...</code>); "
            "the token is also kept in the <code>web/token</code> file of your data folder."
            "</p></main>")
    return body, 401, {"Content-Type": "text/html; charset=utf-8"}


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _host_allowed(ctx: WebContext, host_header: str) -> bool:
    """Only the names this server is reached by (a DNS-rebinding guard on loopback)."""
    if ctx.bind not in ("127.0.0.1", "localhost", "::1"):
        return True  # --host was given on purpose: any name that reaches it
    host = host_header.lower()
    return host in {f"127.0.0.1:{ctx.port}", f"localhost:{ctx.port}", f"[::1]:{ctx.port}"}


def _same_origin(req: Any) -> bool:
    site = req.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = req.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return bool(urlsplit(origin).netloc.lower() == str(req.host).lower())
