"""The Freelancer.com REST conventions on top of :class:`agent.http.HttpClient`.

* every call goes to ``{base_url}/api/{namespace}/0.1/.../`` (trailing slash kept) with
  the ``Freelancer-OAuth-V1`` header;
* the ``{status, result, request_id}`` envelope is unwrapped; ``status: "error"`` is an
  error even with HTTP 200: token codes become :class:`~agent.errors.AuthError`,
  unknown/internal errors are retried like a 5xx, anything else is a
  :class:`~agent.errors.SourceError` naming the code;
* ``limit``/``offset`` paging stops at ``total_count``/``unfiltered_count`` when the API
  gives one, else at a short page; ``max_pages`` bounds every listing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.connector import SourceContext
from agent.errors import AuthError, RateLimited, SourceError, TransientError
from agent.http import DownloadFailed, HttpClient, HttpStatusError, NotDelivered
from plugins.freelancer.settings import TOKEN_PAGE, FreelancerSettings

JSONDict = dict[str, Any]
# page sizes a server may silently cap ``limit`` to; a page of exactly this many items
# without a count is not trusted to be the last one
_SUSPECT_CAPS = frozenset({10, 20, 25, 30, 50})
_AUTH_WORDS = ("AUTH", "TOKEN", "UNAUTHORI", "FORBIDDEN", "PERMISSION", "NOT_LOGGED",
               "LOGIN")
#: times a write is tried again when the connection is refused (nothing was sent)
REFUSED_RETRIES = 2
_RETRY_WORDS = ("UNKNOWN_ERROR", "INTERNAL", "TIMEOUT", "UNAVAILABLE", "TRY_AGAIN",
                "RATE_LIMIT")


def as_int(value: Any) -> int | None:
    """An int from an int or a digit string (ids arrive as both); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


class FreelancerApi:
    """A connector's session with one Freelancer.com account."""

    def __init__(self, settings: FreelancerSettings, context: SourceContext, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import requests  # here, not at the top: registering the plugin stays cheap

        self.settings = settings
        self.context = context
        self.site_url = settings.base_url.rstrip("/")
        self._host = urlsplit(self.site_url).netloc
        self._sleep = sleep
        self._rng = random.Random()
        session = requests.Session()
        session.trust_env = False  # no ~/.netrc credentials, no surprise proxies
        self._session = session
        self.http = HttpClient(
            base_url=f"{self.site_url}/api/", rate_per_second=settings.rate_per_second,
            timeout=settings.timeout, max_retries=settings.max_retries,
            auth_hint=self.auth_hint(), session=session, log=context.log,
            should_stop=context.should_stop,
        )

    @property
    def requests_made(self) -> int:
        return self.http.requests_made

    def auth_hint(self) -> str:
        source = self.context.source
        return (f"The Freelancer.com access token of source \"{source}\" was refused "
                f"(revoked or expired). Create a new token at {TOKEN_PAGE}, put it where "
                f"[sources.settings] token of \"{source}\" points in your config (the "
                f"environment variable, command or keyring entry), then run "
                f"`retainer sync {source}`. Nothing stored so far is lost.")

    def close(self) -> None:
        self.http.close()
        self._session.close()

    def _auth(self) -> Mapping[str, str]:
        return {"Freelancer-OAuth-V1": self.settings.token.get_secret_value()}

    def absolute(self, url: str) -> str:
        if url.startswith(("http://", "https://")):
            return url
        return f"{self.site_url}/{url.lstrip('/')}"

    # -- calls -----------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> JSONDict:
        """GET ``/api/<path>`` and return the envelope's ``result``."""
        errors = 0
        while True:
            try:
                body = self.http.request("GET", path, params=params, auth_header=self._auth)
            except AuthError as exc:
                raise AuthError(self._auth_message(str(exc))) from None
            except HttpStatusError as exc:
                raise _status_error(exc)(self._status_message(path, exc)) from None
            try:
                return self._unwrap(path, body)
            except _RetryableEnvelope as exc:
                errors += 1
                if errors > self.settings.max_retries:
                    raise TransientError(
                        f"Freelancer.com kept answering {path} with an error ({exc}); "
                        f"tried {errors} times. The service may be having trouble; the "
                        "next sync will try again.") from None
                delay = min(8.0, 0.5 * 2 ** (errors - 1)) * (0.5 + 0.5 * self._rng.random())
                self.context.log.info("%s answered an error envelope (%s); retry in %.1fs",
                                      path, exc, delay)
                self._sleep(delay)

    def post_form(self, path: str, form: Mapping[str, Any], *, what: str) -> JSONDict:
        """POST a form to ``/api/<path>`` once and return the envelope's ``result``.

        A write may have been applied even when no answer came back, so unlike
        :meth:`get` nothing is retried after a timeout, a dropped connection, a 5xx or an
        error envelope; those say the write may or may not have happened. A 429 is
        waited out as usual and a refused connection (nothing reached the server) is
        tried again up to :data:`REFUSED_RETRIES` times. ``what`` names the write in
        messages, e.g. ``"the message to thread 12"``.
        """
        try:
            body = self.http.write_once("POST", path, data=dict(form), auth_header=self._auth,
                                        refused_retries=REFUSED_RETRIES)
        except AuthError as exc:
            raise AuthError(f"{self._auth_message(str(exc))} {what} was not sent.") from None
        except RateLimited as exc:
            raise RateLimited(f"Freelancer.com rate-limited {what}; it was not sent. "
                              "Send it again in a minute.", retry_after=exc.retry_after) from None
        except NotDelivered:
            raise TransientError(
                f"could not reach Freelancer.com (connection refused); {what} "
                "was not sent. Check the network and send it again.") from None
        except TransientError as exc:
            raise TransientError(
                f"Freelancer.com did not confirm {what} ({exc}). It may or may not "
                "have been posted: check the thread on Freelancer.com before "
                "sending it again.") from None
        except HttpStatusError as exc:
            raise _status_error(exc)(
                f"{self._status_message(path, exc)}. {what[:1].upper()}{what[1:]} "
                "was not sent.") from None
        try:
            return self._unwrap(path, body)
        except _RetryableEnvelope as exc:
            raise SourceError(
                f"Freelancer.com answered {what} with an error ({exc}). It may or may not "
                "have been posted: check the thread on Freelancer.com before sending it "
                "again.") from None
        except AuthError as exc:
            raise AuthError(f"{exc} {what[:1].upper()}{what[1:]} was not sent.") from None
        except SourceError as exc:
            raise SourceError(f"{exc}. {what[:1].upper()}{what[1:]} was not sent.") from None

    def _auth_message(self, detail: str) -> str:
        return self.auth_hint() if "refused" in detail else f"{detail} {self.auth_hint()}"

    @staticmethod
    def _status_message(path: str, exc: HttpStatusError) -> str:
        code, message = "", ""
        try:
            import json

            body = json.loads(exc.body)
            if isinstance(body, dict):
                code, message = str(body.get("error_code") or ""), str(body.get("message") or "")
        except ValueError:
            pass
        what = f"{code}: {message}" if code else (exc.body or "no details")
        return (f"Freelancer.com refused {path} with HTTP {exc.status} ({what}); if this "
                "persists, the API may have changed; report it with `retainer -v sync`")

    def _unwrap(self, path: str, body: Any) -> JSONDict:
        if not isinstance(body, dict) or "status" not in body:
            raise SourceError(f"Freelancer.com answered {path} without its usual envelope; "
                              "the service may be down or have changed. Try again later.")
        status = body.get("status")
        if status == "success":
            result = body.get("result")
            if not isinstance(result, dict):
                raise SourceError(f"Freelancer.com answered {path} with a result of type "
                                  f"{type(result).__name__}; the API may have changed")
            return result
        code = str(body.get("error_code") or "")
        message = str(body.get("message") or "no message")
        request_id = str(body.get("request_id") or "")
        upper = code.upper()
        if any(word in upper for word in _AUTH_WORDS):
            raise AuthError(f"Freelancer.com: {message} ({code}). {self.auth_hint()}")
        if any(word in upper for word in _RETRY_WORDS) or not code:
            raise _RetryableEnvelope(f"{code or 'no code'}: {message}")
        rid = f", request {request_id}" if request_id else ""
        raise SourceError(f"Freelancer.com refused {path}: {message} ({code}{rid}); "
                          "check the source's settings, or report it if they are right")

    def page_results(self, path: str, key: str, params: Mapping[str, Any], *,
                     count_key: str | None = None,
                     items: Callable[[Any], list[Any]] | None = None) -> Iterator[JSONDict]:
        """Every page's ``result`` of a ``limit``/``offset`` listing, in order."""
        limit = self.settings.page_size
        offset = 0
        pages = 0
        previous: list[Any] | None = None
        while True:
            if pages >= self.settings.max_pages:
                raise SourceError(
                    f"Freelancer.com listed more than {self.settings.max_pages} pages of "
                    f"{path}; raise max_pages in the source's settings if that is right. "
                    "What was read so far is kept.")
            result = self.get(path, {**params, "limit": limit, "offset": offset})
            found = (items or _as_list)(result.get(key))
            if found and found == previous:
                raise SourceError(f"Freelancer.com served the same page of {path} twice; "
                                  "stopping so the sync cannot loop. Try again later.")
            previous = found
            pages += 1
            yield result
            offset += len(found)
            total = as_int(result.get(count_key)) if count_key else None
            if not found:
                return
            if total is not None:
                if offset >= total:
                    return
            elif len(found) < limit and len(found) not in _SUSPECT_CAPS:
                return

    def pages(self, path: str, key: str, params: Mapping[str, Any], *,
              count_key: str | None = None) -> Iterator[JSONDict]:
        """Every item of a listing (see :meth:`page_results`)."""
        for result in self.page_results(path, key, params, count_key=count_key):
            for item in _as_list(result.get(key)):
                if isinstance(item, dict):
                    yield item

    def download(self, url: str, dest_dir: Path, max_bytes: int, *, expected_type: str = "",
                 expected_size: int | None = None) -> Path | None:
        """Stream a file into ``dest_dir``; None when it is over ``max_bytes``.

        Redirects are followed; the token is only sent to the API's own host, never to a
        CDN or a third-party address a message might carry. Any failure of this one file
        raises :class:`~agent.http.DownloadFailed` (see :meth:`HttpClient.download`).
        """
        if urlsplit(url).scheme not in ("http", "https"):
            raise DownloadFailed(f"Freelancer.com gave an attachment address that is not "
                                 f"http(s): {url[:60]!r}", permanent=True)
        return self.http.download(url, dest_dir, max_bytes=max_bytes, auth_header=self._auth,
                                  credential_hosts=(self._host.lower(),),
                                  expected_type=expected_type, expected_size=expected_size)


class NotFound(SourceError):
    """HTTP 404: the thread, project or file is not (or no longer) there."""


def _status_error(exc: HttpStatusError) -> type[SourceError]:
    return NotFound if exc.status == 404 else SourceError


class _RetryableEnvelope(Exception):
    """An error envelope (often with HTTP 200) that is worth asking again."""


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    raise SourceError(f"Freelancer.com sent {type(value).__name__} where a list belongs; "
                      "the API may have changed")
