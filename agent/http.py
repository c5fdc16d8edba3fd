"""A small HTTP client for marketplace plugins, built on :mod:`requests`.

One :class:`HttpClient` per connector. It keeps every request under a rate limit,
retries what is worth retrying and turns everything else into the domain errors of
:mod:`agent.errors`:

* **Rate limit.** Request *starts* are spaced at least ``1 / rate_per_second`` apart
  (a token bucket of depth one), so no one-second window ever holds more than
  ``rate_per_second`` requests, retries included. A 429 pushes the next allowed start
  out to the end of its ``Retry-After``.
* **429.** ``Retry-After`` is honoured as seconds or as an HTTP date; without one the
  wait is ``rate_limit_wait`` (60 s: Upwork unblocks "within a minute from the last
  rate-limited request", so a short backoff only extends the block). Up to
  ``max_retry_after`` seconds the client waits and tries again (at most
  ``max_rate_limited`` times per call); a longer wait raises
  :class:`~agent.errors.RateLimited` with ``retry_after`` so the host schedules the rest
  for the next run.
* **5xx, timeouts, dropped connections.** Retried ``max_retries`` times with exponential
  backoff and jitter, then :class:`~agent.errors.TransientError`.
* **401/403.** :class:`~agent.errors.AuthError`. If the call passed ``refresh_auth``,
  the client calls it once (the plugin refreshes its token there), rebuilds the
  headers with ``auth_header`` and tries again before giving up.
* **Other 4xx.** :class:`HttpStatusError` (a :class:`~agent.errors.SourceError`) with
  ``status`` and a short ``body`` so a plugin can tell, e.g., OAuth ``invalid_grant``.
* **Malformed JSON.** :class:`~agent.errors.SourceError` naming the host and path.
* **Downloads** (:meth:`HttpClient.download`) follow up to ``max_redirects`` redirects;
  credentials go only to ``credential_hosts``. Every failure of the one file (an HTTP
  error status, 401/403 included, a timeout, a body that is a web page or a JSON error
  instead of the declared file, a size other than the declared one) raises
  :class:`DownloadFailed`, so the caller can mark that file and go on.
* **Deadline.** Each call (all its attempts, waits and body reads) ends within
  ``deadline`` seconds, give or take one read timeout: the clock is checked between
  reads of the body, and each attempt's connect/read timeout is cut to what is left.

Secrets: the client never logs headers, bodies or query strings; URLs in logs and
error messages are reduced to ``host/path``.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit

from agent.errors import AuthError, RateLimited, SourceError, TransientError
from agent.files import FILE_MODE, TMP_PREFIX

if TYPE_CHECKING:  # requests (and urllib3) are imported on first use: plugins register cheaply
    import requests

T = TypeVar("T")

AuthHeader = Callable[[], Mapping[str, str]]

_CHUNK = 64 * 1024
_BODY_SNIPPET = 300


class _DropQueryStrings(logging.Filter):
    """Strip query strings from urllib3's debug lines (they can carry tokens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] + "?…" if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_DropQueryStrings())


class HttpStatusError(SourceError):
    """The server answered with an HTTP error status the client does not handle itself."""

    def __init__(self, message: str, *, status: int, body: str, path: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.path = path


class DownloadFailed(SourceError):
    """One file could not be fetched; the rest of the sync can go on.

    ``permanent`` is true when asking again will not help (HTTP 403, 404, 410: the file
    was deleted or is not ours to read); otherwise the next sync tries again.
    """

    def __init__(self, reason: str, *, status: int | None = None, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.permanent = permanent


class NotDelivered(TransientError):
    """A write that never reached the server (its connection was refused): nothing was
    applied, so sending it again is safe. Raised by :meth:`HttpClient.write_once`."""


#: answers that mean the file is gone or not ours: asking again will not help
GONE_STATUSES = frozenset({403, 404, 410})
_PAGE_TYPES = ("text/html", "application/xhtml+xml", "application/json", "application/problem+json")
_PAGE_STARTS = (b"<!doctype html", b"<html", b"<?xml", b"{\"error", b"{\"errors", b"{\"message")


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, reason: str, *, wait: float | None = None, rate_limited: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait
        self.rate_limited = rate_limited


class _Deadline(Exception):
    """Internal: the call's total deadline passed while reading a body."""


def redact_url(url: str) -> str:
    """``https://host/path`` without query string, fragment or credentials: safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{host}{parts.path or '/'}"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Returns ``None`` when the header is missing or unreadable; never a negative number.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class HttpClient:
    """A rate-limited, retrying JSON-over-HTTP client. See the module docstring.

    :param base_url: relative paths given to :meth:`request` are joined to it.
    :param rate_per_second: most request starts in any one-second window.
    :param timeout: connect and read timeout of one attempt (seconds).
    :param max_retries: retries after a 5xx, timeout or connection error (so at most
        ``max_retries + 1`` attempts for those).
    :param deadline: longest one call may take, all attempts and waits included;
        defaults to ``timeout * (max_retries + 1) + 60``.
    :param max_retry_after: a 429 asking to wait longer than this raises
        :class:`~agent.errors.RateLimited` instead of sleeping.
    :param max_rate_limited: 429s one call absorbs before raising ``RateLimited``.
    :param rate_limit_wait: seconds to wait after a 429 that has no ``Retry-After``.
    :param backoff: first backoff delay (seconds); doubles per retry up to ``backoff_cap``,
        then a random factor in [0.5, 1] is applied (jitter).
    :param auth_hint: appended to :class:`~agent.errors.AuthError` messages, e.g.
        ``"Run `retainer auth upwork main` to sign in again."``.
    :param clock, sleep, wall_clock, rng: injectable for tests (monotonic seconds, a
        sleep function, epoch seconds for HTTP dates, a :class:`random.Random`).
    :param session: a :class:`requests.Session` to use (one is created otherwise).
    :param should_stop: the host's stop flag (``SourceContext.should_stop``): once it is
        true, no retry starts and no wait goes on; the call raises
        :class:`~agent.errors.TransientError` instead.
    """

    def __init__(
        self,
        *,
        base_url: str,
        rate_per_second: float = 8.0,
        timeout: float = 30.0,
        max_retries: int = 4,
        user_agent: str = "retainer/0.1",
        deadline: float | None = None,
        max_retry_after: float = 30.0,
        max_rate_limited: int = 20,
        rate_limit_wait: float = 60.0,
        backoff: float = 0.5,
        backoff_cap: float = 8.0,
        auth_hint: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        session: requests.Session | None = None,
        log: logging.Logger | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        self.base_url = base_url
        self.rate_per_second = rate_per_second
        self.timeout = timeout
        self.max_retries = max_retries
        self.user_agent = user_agent
        self.deadline = deadline if deadline is not None else timeout * (max_retries + 1) + 60.0
        self.max_retry_after = max_retry_after
        self.max_rate_limited = max_rate_limited
        self.rate_limit_wait = rate_limit_wait
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.auth_hint = auth_hint
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        if session is None:
            import requests

            session = requests.Session()
            self._own_session = True
        else:
            self._own_session = False
        self._session = session
        self.log = log or logging.getLogger("retainer.http")
        self._lock = threading.Lock()
        self._should_stop = should_stop  # once true, no retry or wait starts
        self._next_start: float | None = None
        self.requests_made = 0  # HTTP attempts sent, retries included

    # -- public -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        auth_header: AuthHeader | None = None,
        refresh_auth: Callable[[], None] | None = None,
        expect_json: bool = True,
    ) -> Any:
        """Send one request and return the parsed JSON body.

        With ``expect_json=False`` the return value is the :class:`requests.Response`
        with its body already read (``.content``/``.text`` work).

        :param auth_header: called before every attempt for the auth headers, so a
            refreshed token is picked up on the next try.
        :param refresh_auth: called once after a 401/403; the call is then retried.
        """
        url = self._url(path_or_url)

        def consume(response: requests.Response, stop_at: float) -> Any:
            body = self._read_body(response, stop_at, limit=None)
            if not expect_json:
                response._content = body
                return response
            try:
                return _json_loads(body)
            except ValueError as exc:
                raise SourceError(
                    f"{redact_url(url)} returned malformed JSON ({exc.__class__.__name__} "
                    f"at {_json_position(exc)}); the service may be down or have changed. "
                    "Try again later; if it persists, report it."
                ) from None

        return self._call(
            method,
            url,
            headers=headers,
            params=params,
            json_body=json,
            data=data,
            auth_header=auth_header,
            refresh_auth=refresh_auth,
            consume=consume,
        )

    def write_once(self, method: str, path_or_url: str, *, refused_retries: int = 2,
                   **kwargs: Any) -> Any:
        """Send a write (a POST that posts a message, say) without the usual retries.

        The server may have applied a write even when no answer came back, so nothing is
        retried after a timeout, a dropped connection or a 5xx: the
        :class:`~agent.errors.TransientError` says it may or may not have happened. A 429
        is waited out as usual, a 401 is retried once after ``refresh_auth`` (the server
        did nothing), and a refused connection (nothing reached the server) is tried again
        up to ``refused_retries`` times, then raises :class:`NotDelivered`. Takes the same
        keyword arguments as :meth:`request`.
        """
        saved = self.max_retries
        self.max_retries = 0
        refused = 0
        try:
            while True:
                try:
                    return self.request(method, path_or_url, **kwargs)
                except TransientError as exc:
                    if isinstance(exc, RateLimited) or "connection refused" not in str(exc):
                        raise
                    refused += 1
                    if refused > refused_retries or self._stopping():
                        raise NotDelivered(str(exc)) from None
                    self._pause(0.5 * refused)
        finally:
            self.max_retries = saved

    def download(
        self,
        url: str,
        dest_dir: Path,
        *,
        max_bytes: int,
        headers: Mapping[str, str] | None = None,
        auth_header: AuthHeader | None = None,
        credential_hosts: Collection[str] = (),
        expected_type: str = "",
        expected_size: int | None = None,
        max_redirects: int = 5,
    ) -> Path | None:
        """Stream ``url`` into a new 0600 temp file in ``dest_dir`` and return its path.

        Returns ``None`` (and leaves no file behind) when the body is larger than
        ``max_bytes``, by ``Content-Length`` before reading or while streaming. The
        caller then records the attachment as ``too_large``. The file is named with
        :data:`agent.files.TMP_PREFIX`, so a killed process's leftovers are cleaned up;
        move or delete it when done.

        Redirects are followed (up to ``max_redirects``); ``auth_header`` is only sent to
        a host in ``credential_hosts`` (``host[:port]``; default: the host of ``url``), so
        a link or redirect to a CDN or any other site never carries the token.
        ``expected_type``/``expected_size`` are what the platform declared for the file:
        a web page or JSON error in place of a file of another type, or a size other
        than the declared one, is refused. Any failure of this one file raises
        :class:`DownloadFailed` (a 429 still raises :class:`~agent.errors.RateLimited`).
        """
        from urllib.parse import urljoin

        full = self._url(url)
        trusted = {h.lower() for h in credential_hosts} or {_netloc(full)}
        declared = expected_type.split(";")[0].strip().lower()
        sniff = bool(declared) and not (
            declared.startswith("text/") or "xml" in declared or "json" in declared
        )

        def consume(response: requests.Response, stop_at: float) -> Path | _Redirect | None:
            if response.status_code in _REDIRECTS:
                location = response.headers.get("Location") or ""
                target = urljoin(response.url or full, location)
                if not location or not target.startswith(("http://", "https://")):
                    raise DownloadFailed(f"{redact_url(full)} redirected to an address that is "
                                         "not http(s)")
                return _Redirect(target)
            got = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if sniff and got in _PAGE_TYPES:
                raise DownloadFailed(f"the server answered a web page or error ({got}) instead "
                                     f"of the file ({declared})")
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                response.close()
                return None
            fd, name = tempfile.mkstemp(dir=dest_dir, prefix=TMP_PREFIX)
            path = Path(name)
            os.fchmod(fd, FILE_MODE)
            try:
                with os.fdopen(fd, "wb") as handle:
                    size = 0
                    for chunk in self._iter_body(response, stop_at):
                        if size == 0 and sniff and chunk.lstrip()[:16].lower().startswith(_PAGE_STARTS):
                            raise DownloadFailed("the server answered a web page or error instead "
                                                 f"of the file ({declared})")
                        size += len(chunk)
                        if size > max_bytes:
                            response.close()
                            raise _TooLarge
                        handle.write(chunk)
                if expected_size is not None and size != expected_size:
                    raise DownloadFailed(f"got {size} bytes where {expected_size} were declared "
                                         "(cut short or not the file)")
            except _TooLarge:
                path.unlink(missing_ok=True)
                return None
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            return path

        hop = full
        headers = {"Accept": "*/*", **(headers or {})}  # a file, not the API's JSON
        for _ in range(max_redirects + 1):
            send_auth = auth_header if _netloc(hop) in trusted else None
            try:
                result: Path | _Redirect | None = self._call(
                    "GET", hop, headers=headers, params=None, json_body=None, data=None,
                    auth_header=send_auth, refresh_auth=None, consume=consume,
                    follow=True, auth_errors=False,
                )
            except HttpStatusError as exc:
                gone = exc.status in GONE_STATUSES
                raise DownloadFailed(
                    f"HTTP {exc.status} {_STATUS_WORDS.get(exc.status, '')}".strip()
                    + ("" if gone else f" from {exc.path}"),
                    status=exc.status, permanent=gone) from None
            except RateLimited:
                raise
            except TransientError as exc:
                raise DownloadFailed(str(exc)) from None
            if not isinstance(result, _Redirect):
                return result
            self.log.debug("download %s redirects to %s", redact_url(hop), redact_url(result.location))
            hop = result.location
        raise DownloadFailed(f"{redact_url(full)} redirected more than {max_redirects} times")

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._own_session:
            self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- machinery ------------------------------------------------------------------------

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        base = self.base_url if self.base_url.endswith("/") else self.base_url + "/"
        return urljoin(base, path_or_url.lstrip("/"))

    def _wait_for_slot(self, stop_at: float) -> None:
        """Block until this request may start under the rate limit; then claim the slot."""
        interval = 1.0 / self.rate_per_second
        with self._lock:
            now = self._clock()
            start = now if self._next_start is None else max(now, self._next_start)
            if start > stop_at:
                raise _DeadlineBeforeStart
            self._next_start = start + interval
        if start > now:
            self._pause(start - now)

    def _stopping(self) -> bool:
        return self._should_stop is not None and self._should_stop()

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, in short steps when a stop flag is given (a stop ends it)."""
        if self._should_stop is None:
            self._sleep(seconds)
            return
        until = self._clock() + seconds
        while not self._should_stop():
            left = until - self._clock()
            if left <= 0:
                return
            self._sleep(min(left, 0.1))

    def _hold_off(self, seconds: float) -> None:
        """Make every request wait ``seconds`` from now (after a 429)."""
        with self._lock:
            until = self._clock() + seconds
            if self._next_start is None or self._next_start < until:
                self._next_start = until

    def _backoff(self, retry: int) -> float:
        delay: float = min(self.backoff_cap, self.backoff * (2 ** max(0, retry - 1)))
        return delay * (0.5 + 0.5 * self._rng.random())

    def _call(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        params: Mapping[str, Any] | None,
        json_body: Any,
        data: Any,
        auth_header: AuthHeader | None,
        refresh_auth: Callable[[], None] | None,
        consume: Callable[[requests.Response, float], T],
        follow: bool = False,
        auth_errors: bool = True,
    ) -> T:
        import requests

        where = f"{method} {redact_url(url)}"
        stop_at = self._clock() + self.deadline
        retries = 0
        rate_limited = 0
        refreshed = False
        last_reason = ""
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1 and self._stopping():
                raise TransientError(f"{where}: not retried ({last_reason or 'retry'}): "
                                     "Retainer is stopping; the next sync goes on from here")
            try:
                self._wait_for_slot(stop_at)
            except _DeadlineBeforeStart:
                raise self._gave_up(where, last_reason or "the deadline passed", retries) from None
            if attempt > 1 and self._stopping():  # the stop came during the wait
                raise TransientError(f"{where}: not retried ({last_reason}): "
                                     "Retainer is stopping; the next sync goes on from here")
            remaining = stop_at - self._clock()
            if remaining <= 0:
                raise self._gave_up(where, last_reason or "the deadline passed", retries)
            send_headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
            if headers:
                send_headers.update(headers)
            if auth_header is not None:
                send_headers.update(auth_header())
            started = self._clock()
            try:
                try:
                    self.requests_made += 1
                    response = self._session.request(
                        method,
                        url,
                        headers=send_headers,
                        params=params,
                        json=json_body,
                        data=data,
                        timeout=(min(self.timeout, remaining), min(self.timeout, remaining)),
                        stream=True,
                        allow_redirects=False,
                    )
                except requests.Timeout:
                    raise _Retry(f"timed out after {min(self.timeout, remaining):.0f}s") from None
                except requests.ConnectionError as exc:
                    raise _Retry(f"connection failed ({_short(exc)})") from None
                with contextlib.closing(response):
                    status = response.status_code
                    self.log.debug(
                        "%s -> %s in %.2fs", where, status, self._clock() - started
                    )
                    if status == 429:
                        wait = parse_retry_after(
                            response.headers.get("Retry-After"), now=self._wall_clock()
                        )
                        raise _Retry("rate limited (HTTP 429)", wait=wait, rate_limited=True)
                    if status >= 500:
                        raise _Retry(f"HTTP {status}")
                    if status in (401, 403) and auth_errors:
                        if refresh_auth is not None and not refreshed:
                            refreshed = True
                            self.log.info("%s -> HTTP %s; refreshing credentials once", where, status)
                            refresh_auth()
                            continue
                        hint = f" {self.auth_hint}" if self.auth_hint else ""
                        raise AuthError(f"{redact_url(url)} refused the credentials (HTTP {status}).{hint}")
                    if status >= 300 and not (follow and status in _REDIRECTS):
                        body = _snippet(response, stop_at, self)
                        raise HttpStatusError(
                            f"{where} returned HTTP {status}: {body or response.reason}",
                            status=status,
                            body=body,
                            path=redact_url(url),
                        )
                    try:
                        return consume(response, stop_at)
                    except _Deadline:
                        raise _Retry("the response body did not arrive in time") from None
                    except (requests.Timeout, requests.ConnectionError) as exc:
                        raise _Retry(f"reading the response failed ({_short(exc)})") from None
            except _Retry as retry:
                last_reason = retry.reason
                if retry.rate_limited:
                    rate_limited += 1
                    wait = retry.wait
                    if wait is None:
                        wait = self.rate_limit_wait
                    if wait > self.max_retry_after:
                        raise RateLimited(
                            f"{redact_url(url)} asked us to wait {wait:.0f}s (HTTP 429); "
                            "the next sync will pick up from here.",
                            retry_after=wait,
                        ) from None
                    if rate_limited > self.max_rate_limited:
                        raise RateLimited(
                            f"{redact_url(url)} kept answering HTTP 429 ({rate_limited} times); "
                            "the next sync will pick up from here.",
                            retry_after=wait,
                        ) from None
                    self.log.info("%s rate limited; waiting %.1fs", where, wait)
                    if self._clock() + wait > stop_at:
                        raise RateLimited(
                            f"{redact_url(url)} rate limited us past the request deadline; "
                            "the next sync will pick up from here.",
                            retry_after=wait,
                        ) from None
                    self._hold_off(wait)
                    continue
                retries += 1
                if retries > self.max_retries:
                    raise self._gave_up(where, last_reason, retries - 1) from None
                delay = self._backoff(retries)
                if self._clock() + delay > stop_at:
                    raise self._gave_up(where, last_reason, retries - 1) from None
                self.log.info("%s failed (%s); retry %d in %.1fs", where, last_reason, retries, delay)
                self._pause(delay)

    def _gave_up(self, where: str, reason: str, retries: int) -> TransientError:
        tries = "once" if retries == 0 else f"{retries + 1} times"
        return TransientError(
            f"{where} failed: {reason} (tried {tries}). "
            "The service may be down or the network unreachable; the next sync will try again."
        )

    def _iter_body(self, response: requests.Response, stop_at: float) -> Iterator[bytes]:
        """The body in pieces as they arrive (``read1``), checking the deadline in between."""
        import requests
        import urllib3

        raw = response.raw
        try:
            while True:
                if self._clock() > stop_at:
                    raise _Deadline
                chunk = raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    return
                yield chunk
        except _Deadline:
            raise
        except (TimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
            raise requests.Timeout("read timed out") from exc
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError, OSError) as exc:
            raise requests.ConnectionError(f"reading the body failed: {exc.__class__.__name__}") from exc

    def _read_body(self, response: requests.Response, stop_at: float, limit: int | None) -> bytes:
        parts: list[bytes] = []
        size = 0
        for chunk in self._iter_body(response, stop_at):
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        return b"".join(parts)


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class _Redirect:
    location: str


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_STATUS_WORDS = {403: "Forbidden: no access to this file", 404: "Not Found: the file is gone",
                 410: "Gone: the file was deleted"}


def _netloc(url: str) -> str:
    return urlsplit(url).netloc.lower().rpartition("@")[2]


class _DeadlineBeforeStart(Exception):
    pass


def _snippet(response: requests.Response, stop_at: float, client: HttpClient) -> str:
    import requests

    try:
        raw = client._read_body(response, stop_at, limit=_BODY_SNIPPET * 4)
    except (_Deadline, requests.RequestException):
        return ""
    text = raw.decode("utf-8", "replace").strip()
    text = " ".join(text.split())
    return text[:_BODY_SNIPPET]


def _short(exc: BaseException) -> str:
    """A one-line reason without the URL (requests puts the full URL, query included, in it)."""
    name = exc.__class__.__name__
    inner = exc.__context__ or exc.__cause__
    text = str(exc)
    if "Read timed out" in text:
        return "read timed out"
    if "Connection refused" in text:
        return "connection refused"
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "the server closed the connection"
    if inner is not None and "?" not in str(inner):
        return f"{name}: {str(inner)[:120]}"
    return name


def _json_loads(body: bytes) -> Any:
    if not body.strip():
        raise ValueError("empty body")
    return json.loads(body)


def _json_position(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno} column {exc.colno}"
    return str(exc)
