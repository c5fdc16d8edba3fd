"""The IMAP connector: STATUS-first incremental sync, batched FETCH, per-part downloads.

How one sync goes, per configured folder:

1. ``STATUS folder (UIDNEXT UIDVALIDITY MESSAGES [HIGHESTMODSEQ])``. When UIDVALIDITY and
   UIDNEXT equal what the cursor remembers, nothing arrived: the folder costs this one
   command (no SELECT), so a sync with nothing new is LOGIN + one STATUS per folder.
2. Otherwise ``EXAMINE`` (read-only: flags are never changed) and ``UID SEARCH`` for the
   UIDs above the last one read. A changed UIDVALIDITY resets the folder: every message
   is read again, and the store's upsert by Message-ID keeps it from being doubled.
3. Per batch of UIDs, one ``UID FETCH (RFC822.SIZE INTERNALDATE)``, then the whole
   messages with one ``UID FETCH (BODY.PEEK[])`` per chunk of at most :data:`CHUNK_BYTES`
   (a message over :data:`STREAM_BYTES` on its own, in pieces). Each message is read by
   :func:`agent.mail.message_from_bytes`, the reader the Maildir source uses too, so a
   message gives the same record whichever way it arrives. A message over the message
   cap is kept by its header (``BODY.PEEK[HEADER]``) and flagged ``too_large``.
4. Each batch becomes a :class:`~agent.models.Page` whose cursor names the last UID in
   it; the host commits it after storing the records.

A connection dropped mid-sync is reopened and the interrupted command repeated, at most
``max_reconnects`` times per sync; after that the sync ends with
:class:`~agent.errors.TransientError` and resumes from the last committed page next time.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from queue import Full, Queue
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from agent.connector import Connector, SourceContext
from agent.deadline import Watchdog
from agent.errors import AuthError, SourceError, TransientError, UnsupportedOperation
from agent.mail import ReaderPool, backfilled, scrub, too_large_message
from agent.models import Cursor, Message, Outgoing, Page
from plugins.imap.settings import ImapSettings

if TYPE_CHECKING:
    # imapclient and ssl are imported by the methods that use them, so registering the
    # plugin (every `retainer` start) does not pay for them.
    import ssl

    from imapclient import IMAPClient

    from agent.oauth import TokenManager

CURSOR_VERSION = 1
#: Most bytes (as the server declares them) fetched in one FETCH command, and kept in one
#: page: bigger batches are split so memory stays bounded.
CHUNK_BYTES = 24 * 1024 * 1024
#: Messages larger than this are fetched on their own, in pieces of STREAM_PIECE bytes.
STREAM_BYTES = 8 * 1024 * 1024
STREAM_PIECE = 4 * 1024 * 1024
#: Messages are read whole up to this many bytes (or twice ``agent.max_attachment_mb``);
#: larger ones are kept by their header, as the Maildir source does.
MIN_MESSAGE_CAP = 64 * 1024 * 1024

META_ITEMS = "(UID RFC822.SIZE INTERNALDATE)"
#: Where the server advertises X-GM-EXT-1 (Gmail): its message id and labels too.
GMAIL_META_ITEMS = META_ITEMS[:-1] + " X-GM-MSGID X-GM-LABELS)"


def dropped() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the connection is gone (the command may be repeated elsewhere)."""
    from imapclient.exceptions import IMAPClientAbortError

    return (IMAPClientAbortError, OSError, EOFError)

T = TypeVar("T")


class _TokenRefused(Exception):
    """The server refused the OAuth access token: refresh it and log in once more."""


class _FolderReset(Exception):
    """The folder's UIDVALIDITY changed while we were reading it: start it over."""


@dataclass
class Stats:
    """What the last :meth:`ImapConnector.fetch` did (for logs and tests)."""

    connects: int = 0
    status: int = 0
    selects: int = 0
    searches: int = 0
    fetches: int = 0
    messages: int = 0
    downloaded: int = 0
    reconnects: int = 0
    resets: int = 0
    gmail_repeats: int = 0  # X-GM-EXT-1: copies skipped, already read under another label


@dataclass
class Meta:
    """What the first FETCH of a batch says about one message."""

    uid: int
    size: int
    date: datetime | None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return scrub(value.decode("utf-8", "surrogateescape"))
    if isinstance(value, str):
        return scrub(value)
    return str(value)


def _int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return max(number, 0)


# -- a fast FETCH response parser -------------------------------------------------------
#
# imapclient's response parser tokenizes byte by byte in Python, which costs more than
# everything else a sync does; FETCH responses are parsed here with one regex instead.

_TOKENS = re.compile(
    rb'[ \t]*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|((?:[^\s()"\[\]{}]|\[[^\]]*\])+)|(\{\d+\+?\}$)|(\S))',
    re.DOTALL)
_UNESCAPE = re.compile(rb"\\(.)")
Value = Any  # bytes | None | list[Value]


def parse_fetch(data: Sequence[Any]) -> dict[int, dict[bytes, Any]]:
    """imaplib's FETCH data -> ``{uid: {b"BODY[1]": b"...", ...}}`` (keys upper-case).

    Items in the parenthesized lists are ``bytes`` (atoms, numbers and strings), ``None``
    (NIL) or lists. Responses without a UID are ignored.
    """
    stack: list[list[Value]] = [[]]
    for item in data:
        if isinstance(item, tuple):
            text, literal = item[0], item[1]
            _tokenize(text, stack)
            stack[-1].append(literal if isinstance(literal, bytes) else b"")
        elif isinstance(item, bytes):
            _tokenize(item, stack)
    top = stack[0]
    found: dict[int, dict[bytes, Any]] = {}
    for value in top:
        if not isinstance(value, list):
            continue
        fields: dict[bytes, Any] = {}
        for index in range(0, len(value) - 1, 2):
            key = value[index]
            if isinstance(key, bytes):
                fields[key.upper()] = value[index + 1]
        uid = fields.get(b"UID")
        if isinstance(uid, bytes) and uid.isdigit():
            found[int(uid)] = fields
    return found


def _tokenize(text: bytes, stack: list[list[Value]]) -> None:
    current = stack[-1]
    for opened, closed, quoted, atom, literal, other in _TOKENS.findall(text):
        if opened:
            child: list[Value] = []
            current.append(child)
            stack.append(child)
            current = child
        elif closed:
            if len(stack) > 1:
                stack.pop()
                current = stack[-1]
        elif atom:
            current.append(None if len(atom) == 3 and atom.upper() == b"NIL" else atom)
        elif other:
            current.append(other)
        elif not literal:  # a quoted string (possibly empty)
            current.append(_UNESCAPE.sub(rb"\1", quoted) if b"\\" in quoted else quoted)
        # a literal marker: its bytes follow as the next item


# -- the connector ---------------------------------------------------------------------


class ImapConnector(Connector[ImapSettings]):
    """Reads new mail from the configured folders of one IMAP account."""

    #: The host applies notification-mail formats to what this connector yields.
    reads_mail: ClassVar[bool] = True
    #: SASL mechanisms for auth = "oauth2", preferred first (the server picks from these).
    sasl_preference: ClassVar[tuple[str, ...]] = ("OAUTHBEARER", "XOAUTH2")
    #: epoch seconds; tests replace it to move time for token expiry.
    wall_clock: ClassVar[Callable[[], float]] = staticmethod(time.time)

    def __init__(self, settings: ImapSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self.log: logging.Logger = context.log
        self.client: IMAPClient | None = None
        self.selected: str | None = None
        self.selected_uidvalidity: int | None = None
        self.capabilities: frozenset[bytes] = frozenset()
        self.stats = Stats()
        self._worker: threading.Thread | None = None
        self._pool: ReaderPool | None = None  # reads fetched messages in other processes
        self._stop = threading.Event()
        self._watchdog = Watchdog(f"imap-deadline-{context.source}")
        self._live: IMAPClient | None = None  # the connection the watchdog cuts
        self._opening_sock: socket.socket | None = None  # ... or the one being opened
        self._oauth: TokenManager | None = None
        #: Gmail (X-GM-EXT-1): message ids read in this sync, and (folder, uid) -> labels
        self._gmail_seen: set[bytes] = set()
        self._gmail_labels: dict[tuple[str, int], tuple[str, list[str]]] = {}

    # -- connection ----------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"{self.context.source}: {self.settings.host}:{self.settings.effective_port}"

    def ssl_context(self) -> ssl.SSLContext:
        import ssl

        ca_file = self.settings.ca_file
        try:
            return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise SourceError(f"{self.context.source}: cannot load ca_file {ca_file} "
                              f"({exc}); it must be a PEM certificate") from None

    def connect(self) -> IMAPClient:
        """Open, secure and log in a new connection (closing any old one)."""
        try:
            return self._connect()
        except _TokenRefused:
            # the access token looked valid here but the server said no (revoked, or
            # expired early): refresh once and log in on a new connection
            self.tokens().force_refresh()
            try:
                return self._connect()
            except _TokenRefused:
                raise AuthError(
                    f"{self.where}: the server refused the OAuth 2.0 sign-in of "
                    f"{self.settings.username!r} even with a fresh token; check that username "
                    "is the signed-in account, then run "
                    f"`retainer auth {self.context.source}`") from None

    def tokens(self) -> TokenManager:
        """The source's OAuth 2.0 tokens (auth = "oauth2")."""
        from agent.oauth import TokenManager

        if self._oauth is None:
            client = self.settings.oauth_client(self.context.source)
            if client is None:
                raise SourceError(f'{self.context.source}: auth = "password" has no tokens')
            self._oauth = TokenManager(client, self.context.state_dir,
                                       wall_clock=type(self).wall_clock)
        return self._oauth

    def _connect(self) -> IMAPClient:
        import ssl

        from imapclient.exceptions import IMAPClientError
        from imapclient.imapclient import SocketTimeout

        self._drop()
        self._live = None
        self._opening_sock = None
        _opening.connector = self
        settings = self.settings
        context = self.ssl_context() if settings.security != "none" else None
        timeout = SocketTimeout(settings.timeout, settings.timeout)
        self.stats.connects += 1
        try:
            client = _watched_client()(settings.host, port=settings.effective_port,
                                       ssl=settings.security == "tls", ssl_context=context,
                                       timeout=timeout)
        except ssl.SSLCertVerificationError as exc:
            raise self._tls_error(exc) from None
        except ssl.SSLError as exc:
            raise SourceError(
                f"{self.where}: the TLS handshake failed ({exc.reason or exc}); check that "
                f"sources.settings.security = \"{settings.security}\" matches the port "
                "(tls: 993, starttls: 143)") from None
        except TimeoutError:
            raise TransientError(f"{self.where}: no answer within {settings.timeout:g} s; "
                                 "will try again (check host and port if this persists)"
                                 ) from None
        except socket.gaierror as exc:
            raise TransientError(f"{self.where}: cannot resolve the host name ({exc.strerror}); "
                                 "check sources.settings.host and the network") from None
        except (OSError, IMAPClientError) as exc:
            raise TransientError(f"{self.where}: cannot connect ({_reason(exc)}); will try "
                                 "again (check sources.settings.host and port)") from None
        self._live = client
        client.normalise_times = False
        if not self.log.isEnabledFor(logging.DEBUG):
            client._imap.debug = 0  # imaplib formats every line for its debug log otherwise
        try:
            if settings.security == "starttls":
                if b"STARTTLS" not in client.capabilities():
                    raise SourceError(f"{self.where}: the server does not offer STARTTLS; "
                                      'use security = "tls" (port 993)')
                try:
                    client.starttls(context)
                except ssl.SSLCertVerificationError as exc:
                    raise self._tls_error(exc) from None
            self._login(client)
        except BaseException:
            _shutdown(client)
            raise
        self.client = client
        self.selected = None
        return client

    def _login(self, client: IMAPClient) -> None:
        import ssl

        from imapclient.exceptions import IMAPClientError, LoginError

        try:
            if self.settings.auth == "oauth2":
                response = self._oauth_login(client)
            else:
                password = self.settings.password
                response = client.login(self.settings.username,
                                        password.get_secret_value() if password else "")
        except LoginError:
            raise AuthError(
                f"{self.where}: the server refused the login for {self.settings.username!r}; "
                "check sources.settings.username and sources.settings.password "
                "(some providers need an app password)") from None
        except ssl.SSLError as exc:
            raise self._tls_error(exc) from None
        except dropped() as exc:
            raise TransientError(f"{self.where}: the connection dropped during login "
                                 f"({_reason(exc)}); will try again") from None
        except IMAPClientError as exc:
            raise SourceError(f"{self.where}: login failed: {_reason(exc)}") from None
        caps = b""
        if isinstance(response, bytes) and response.startswith(b"[CAPABILITY "):
            caps = response[len(b"[CAPABILITY "):].split(b"]", 1)[0]
        if caps:
            self.capabilities = frozenset(caps.upper().split())
            client._cached_capabilities = tuple(self.capabilities)
        else:
            self.capabilities = frozenset(client.capabilities())

    def _oauth_login(self, client: IMAPClient) -> Any:
        """SASL OAUTHBEARER (RFC 7628) or XOAUTH2, whichever the server advertises."""
        from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

        from agent.oauth import choose_mechanism, oauthbearer, xoauth2

        offered = [c.decode("ascii", "replace")[5:] for c in client.capabilities()
                   if c.upper().startswith(b"AUTH=")]
        mechanism = choose_mechanism(offered, self.sasl_preference)
        if mechanism is None:
            raise SourceError(f"{self.where}: the server offers no OAuth 2.0 sign-in "
                              "(AUTH=OAUTHBEARER or AUTH=XOAUTH2); use auth = \"password\"")
        token = self.tokens().access_token()
        settings = self.settings
        initial = (xoauth2(settings.username, token) if mechanism == "XOAUTH2" else
                   oauthbearer(settings.username, token, settings.host, settings.effective_port))
        # after a refusal the server sends an error challenge; the client answers it with
        # an empty response (XOAUTH2) or ^A (RFC 7628) and gets the final NO at once
        answers = iter([initial.encode(), b"" if mechanism == "XOAUTH2" else b"\x01"])

        def answer(challenge: bytes) -> bytes:
            return next(answers, b"")

        try:
            return client._command_and_check("authenticate", mechanism, answer)
        except IMAPClientAbortError:
            raise  # the connection dropped: the caller reconnects
        except IMAPClientError:
            self.log.info("%s: %s sign-in refused; refreshing the token", self.where, mechanism)
            raise _TokenRefused() from None

    def _tls_error(self, exc: ssl.SSLError) -> SourceError:
        detail = getattr(exc, "verify_message", "") or exc.reason or str(exc)
        hint = ("set sources.settings.ca_file to the server's certificate (PEM)"
                if not self.settings.ca_file else
                f"the certificate is not signed by {self.settings.ca_file}; check ca_file")
        return SourceError(
            f"{self.where}: the server's TLS certificate could not be verified ({detail}). "
            f"If this server uses a self-signed certificate, {hint}. "
            "Certificate checks cannot be turned off.")

    def _drop(self) -> None:
        client, self.client = self.client, None
        self.selected = None
        if client is not None:
            _shutdown(client)

    def send(self, outgoing: Outgoing) -> str:
        """Reply by SMTP (``[sources.settings.smtp]``); return the sent Message-ID."""
        from plugins.imap import smtp

        if self.settings.smtp is None:
            raise UnsupportedOperation(
                f"{self.context.source}: add a [sources.settings.smtp] table (host, security) "
                "to send replies from this mailbox")
        password = self.settings.password
        return smtp.send(self.settings.smtp, outgoing, username=self.settings.username,
                         password=password.get_secret_value() if password else None,
                         oauth=self.tokens() if self.settings.auth == "oauth2" else None)

    def _too_slow(self) -> TransientError:
        return TransientError(
            f"{self.where}: the server did not complete a command within "
            f"{self.settings.operation_deadline:g} s (sources.settings.operation_deadline); "
            "it is too slow or stuck; the next sync tries again")

    def _cut(self) -> None:
        """The watchdog's action: shut the live socket down under a blocked read."""
        client = self._live
        sock = getattr(getattr(client, "_imap", None), "sock", None)
        if client is None:
            sock = self._opening_sock  # still reading the greeting
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._watchdog.close()
        self._stop_worker()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            _shutdown(client)

    def _ready(self, folder: str) -> IMAPClient:
        """A logged-in connection with ``folder`` selected read-only."""
        from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

        client = self.client or self.connect()
        if self.selected != folder:
            try:
                response = client.select_folder(folder, readonly=True)
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                raise SourceError(f"{self.where}: cannot open folder {folder!r}: "
                                  f"{_reason(exc)}") from None
            self.stats.selects += 1
            uidvalidity = _int(response.get(b"UIDVALIDITY"))
            if self.selected_uidvalidity is not None and uidvalidity != self.selected_uidvalidity:
                self.selected_uidvalidity = uidvalidity
                self.selected = folder
                raise _FolderReset(folder)
            self.selected = folder
            self.selected_uidvalidity = uidvalidity
        return client

    def _retrying(self, folder: str | None, action: Callable[[IMAPClient], T]) -> T:
        """Run ``action`` on a ready connection; reconnect and repeat it if it drops."""
        import ssl

        from imapclient.exceptions import IMAPClientError

        gone = dropped()
        limit = self.settings.operation_deadline
        while True:
            try:
                with self._watchdog.guard(limit, self._cut):
                    client = self._ready(folder) if folder else (self.client or self.connect())
                    return action(client)
            except ssl.SSLCertVerificationError as exc:
                raise self._tls_error(exc) from None
            except TransientError:
                if self._watchdog.fired:  # cut while connecting or logging in
                    raise self._too_slow() from None
                raise
            except gone as exc:
                self._drop()
                if self._watchdog.fired:  # a trickling server: reconnecting will not help
                    raise self._too_slow() from None
                if self._stop.is_set():  # the host stopped reading pages: do not reconnect
                    raise TransientError(f"{self.where}: sync stopped") from None
                self.stats.reconnects += 1
                if self.stats.reconnects > self.settings.max_reconnects:
                    raise TransientError(
                        f"{self.where}: the connection dropped {self.stats.reconnects} times "
                        f"({_reason(exc)}); giving up for now, the next sync resumes where "
                        "this one stopped") from None
                self.log.warning("%s: connection lost (%s); reconnecting (%d of %d)",
                                 self.where, _reason(exc), self.stats.reconnects,
                                 self.settings.max_reconnects)
                time.sleep(min(0.2 * self.stats.reconnects, 2.0))
            except IMAPClientError as exc:  # NO / BAD: the server refused a command
                raise SourceError(f"{self.where}: the server refused a command "
                                  f"({_reason(exc)}); will try again next sync") from None

    # -- the sync ------------------------------------------------------------------

    def load_cursor(self, cursor: Cursor) -> dict[str, dict[str, int]]:
        if not cursor:
            return {}
        if cursor.get("v") != CURSOR_VERSION or not isinstance(cursor.get("folders"), dict):
            self.log.warning("%s: the saved IMAP position is from another version; reading "
                             "every message again (repeats are merged)", self.context.source)
            return {}
        folders: dict[str, dict[str, int]] = {}
        for name, state in cursor["folders"].items():
            if isinstance(state, dict):
                folders[str(name)] = {k: int(v) for k, v in state.items()
                                      if isinstance(v, int) and not isinstance(v, bool)}
        return folders

    def status_items(self) -> list[bytes]:
        items = [b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY"]
        if b"CONDSTORE" in self.capabilities:
            items.append(b"HIGHESTMODSEQ")
        return items

    def fetch(self, cursor: Cursor) -> Iterator[Page]:
        """Yield pages; the next batch is fetched in a thread while the host stores this one."""
        if not self.settings.prefetch:
            yield from self.pages(cursor)
            return
        self._stop.clear()
        queue: Queue[tuple[str, Any]] = Queue(maxsize=1)

        def put(item: tuple[str, Any]) -> bool:
            while not self._stop.is_set():
                try:
                    queue.put(item, timeout=0.1)
                    return True
                except Full:
                    continue
            return False

        def work() -> None:
            try:
                for page in self.pages(cursor):
                    if not put(("page", page)):
                        return
                put(("done", None))
            except BaseException as exc:
                put(("error", exc))

        worker = threading.Thread(target=work, name=f"imap-{self.context.source}", daemon=True)
        self._worker = worker
        worker.start()
        try:
            while True:
                kind, value = queue.get()
                if kind == "page":
                    yield value
                elif kind == "done":
                    return
                else:
                    raise value
        finally:
            self._stop_worker()

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self._stop.set()
        worker.join(timeout=1.0)
        if worker.is_alive():  # blocked on the network: cut the connection under it
            client = self.client
            if client is not None:
                _shutdown(client)
            worker.join(timeout=self.settings.timeout + 5)

    def pages(self, cursor: Cursor) -> Iterator[Page]:
        """The sync itself, without prefetching (see :meth:`fetch`)."""
        self.stats = Stats()
        folders = self.load_cursor(cursor)
        self._retrying(None, lambda c: None)  # connect and log in
        statuses: dict[str, dict[bytes, Any]] = {}
        missing: list[str] = []
        for name in self.settings.folders:
            status = self._status(name)
            if status is None:
                missing.append(name)
            else:
                statuses[name] = status
        yield from self._refetch()
        if missing:
            message = (f"{self.where}: folder(s) {', '.join(map(repr, missing))} not found; "
                       "fix sources.settings.folders (names are case-sensitive, subfolders "
                       "use the server's separator, e.g. INBOX.Sent or Sent)")
            if not statuses:
                raise SourceError(message)
            self.log.warning("%s", message)
        todo: list[str] = []
        for name, status in statuses.items():
            state = folders.get(name, {})
            if (state.get("uidvalidity") == _int(status.get(b"UIDVALIDITY"))
                    and state.get("uidnext") == _int(status.get(b"UIDNEXT"))):
                continue
            todo.append(name)
        if not todo:
            self.log.debug("%s: nothing new in %d folder(s)", self.context.source, len(statuses))
            return
        pending = {name: _int(statuses[name].get(b"MESSAGES")) for name in todo}
        progress = [0, 0]
        for name in todo:
            if self.context.should_stop():
                return
            total_later = sum(pending[n] for n in todo if n != name and pending[n] >= 0)
            pending[name] = -1
            yield from self._sync_folder(name, folders, statuses[name], progress, total_later)

    def _refetch(self) -> Iterator[Page]:
        """Messages the host asked for again (``context.refetch``), by folder and UID;
        their pages carry no cursor."""
        wanted: dict[str, list[int]] = {}
        for extra in self.context.refetch:
            folder, uid = extra.get("folder"), extra.get("uid")
            if isinstance(folder, str) and isinstance(uid, int) and uid > 0:
                wanted.setdefault(folder, []).append(uid)
        for folder, uids in wanted.items():
            if folder not in self.settings.folders:
                continue
            self.log.info("%s: reading %d earlier message(s) in %r again for their files",
                          self.context.source, len(uids), folder)
            self.selected = None
            self.selected_uidvalidity = None
            uids = sorted(set(uids))
            for start in range(0, len(uids), self.settings.batch_size):
                batch = uids[start:start + self.settings.batch_size]
                for records, _last in self._read_batch(folder, batch, 0, backfill=True):
                    if records:
                        yield Page(records=[backfilled(r) for r in records], cursor=None)

    def _status(self, name: str) -> dict[bytes, Any] | None:
        from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

        items = self.status_items()

        def run(client: IMAPClient) -> dict[bytes, Any] | None:
            try:
                return dict(client.folder_status(name, items))
            except IMAPClientAbortError:
                raise
            except IMAPClientError:
                return None

        self.stats.status += 1
        return self._retrying(None, run)

    def _sync_folder(self, name: str, folders: dict[str, dict[str, int]], status: dict[bytes, Any],
                     progress: list[int], total_later: int) -> Iterator[Page]:
        for _attempt in range(3):
            try:
                yield from self._read_folder(name, folders, status, progress, total_later)
                return
            except _FolderReset:
                self.stats.resets += 1
                self.log.warning("%s: the UIDVALIDITY of %r changed during the sync; "
                                 "reading it again", self.where, name)
                status = {}
        raise TransientError(f"{self.where}: folder {name!r} keeps changing its UIDVALIDITY; "
                             "will try again next sync")

    def _read_folder(self, name: str, folders: dict[str, dict[str, int]], status: dict[bytes, Any],
                     progress: list[int], total_later: int) -> Iterator[Page]:
        state = dict(folders.get(name, {}))
        self.selected = None
        self.selected_uidvalidity = None
        client = self._retrying(name, lambda c: c)
        del client
        uidvalidity = self.selected_uidvalidity or 0
        if state and state.get("uidvalidity") != uidvalidity:
            self.log.warning("%s: the UIDVALIDITY of folder %r changed (%s -> %s), so its "
                             "message numbers are new; reading it again (messages already "
                             "stored are merged, not doubled)", self.where, name,
                             state.get("uidvalidity"), uidvalidity)
            self.stats.resets += 1
            state = {}
        last_uid = state.get("last_uid", 0)
        state["uidvalidity"] = uidvalidity
        state["last_uid"] = last_uid

        def search(client: IMAPClient) -> list[int]:
            criteria = ["ALL"] if last_uid == 0 else ["UID", f"{last_uid + 1}:*"]
            return [int(u) for u in client.search(criteria)]

        self.stats.searches += 1
        uids = sorted(u for u in self._retrying(name, search) if u > last_uid)
        uidnext = max(_int(status.get(b"UIDNEXT")), (uids[-1] + 1) if uids else 0, last_uid + 1)
        highestmodseq = _int(status.get(b"HIGHESTMODSEQ"))
        total = progress[1] = progress[0] + len(uids) + total_later
        if uids:
            self.log.info("%s: %d new message(s) in %r", self.context.source, len(uids), name)
        batch_size = self.settings.batch_size
        for start in range(0, len(uids), batch_size):
            batch = uids[start:start + batch_size]
            for chunk in self._read_batch(name, batch, uidvalidity):
                records, chunk_last = chunk
                state["last_uid"] = chunk_last
                progress[0] += len(records)
                done = chunk_last >= uids[-1]
                if done:
                    state["uidnext"] = uidnext
                    if highestmodseq:
                        state["highestmodseq"] = highestmodseq
                folders[name] = dict(state)
                yield Page(records=records, cursor=self._cursor(folders),
                           progress=(progress[0], max(total, progress[0])))
            if start + batch_size < len(uids) and self.context.should_stop():
                return
        if not uids:
            state["uidnext"] = uidnext
            if highestmodseq:
                state["highestmodseq"] = highestmodseq
            folders[name] = dict(state)
            yield Page(records=[], cursor=self._cursor(folders))

    @staticmethod
    def _cursor(folders: dict[str, dict[str, int]]) -> dict[str, Any]:
        return {"v": CURSOR_VERSION, "folders": copy.deepcopy(folders)}

    def _read_batch(self, folder: str, uids: list[int], uidvalidity: int, *,
                    backfill: bool = False) -> Iterator[tuple[list[Message], int]]:
        """Messages of ``uids`` in chunks of bounded size, each with its last UID
        (``backfill``: read again for a promotion, every file downloaded)."""

        gmail = b"X-GM-EXT-1" in self.capabilities

        def meta(client: IMAPClient) -> dict[int, dict[bytes, Any]]:
            return self._uid_fetch(client, uids, GMAIL_META_ITEMS if gmail else META_ITEMS)

        found = self._retrying(folder, meta)
        metas: list[Meta] = []
        for uid in uids:
            data = found.get(uid)
            if data is None:
                continue  # expunged in the meantime
            if gmail and self._gmail_repeat(folder, uid, data):
                continue  # read in another folder (label) already
            metas.append(Meta(uid, _int(data.get(b"RFC822.SIZE")),
                              internal_date(data.get(b"INTERNALDATE"))))
        if not metas:
            yield [], uids[-1]
            return
        chunk: list[Meta] = []
        chunk_bytes = 0
        for index, item in enumerate(metas):
            if chunk and chunk_bytes + item.size > CHUNK_BYTES:
                yield self._labelled(folder, self._finish(folder, chunk, backfill)), chunk[-1].uid
                chunk, chunk_bytes = [], 0
            chunk.append(item)
            chunk_bytes += item.size
            if index == len(metas) - 1:
                yield self._labelled(folder, self._finish(folder, chunk, backfill)), uids[-1]

    def _gmail_repeat(self, folder: str, uid: int, data: dict[bytes, Any]) -> bool:
        """Gmail: remember the message's labels; true if this sync already read it from
        another folder (Gmail shows one message in a folder per label and in All Mail)."""
        from imapclient.imap_utf7 import decode

        msgid = data.get(b"X-GM-MSGID")
        if not isinstance(msgid, bytes) or not msgid.isdigit():
            return False
        if msgid in self._gmail_seen:
            self.stats.gmail_repeats += 1
            return True
        self._gmail_seen.add(msgid)
        raw = data.get(b"X-GM-LABELS")
        labels = [decode(v) for v in raw if isinstance(v, bytes)] if isinstance(raw, list) else []
        self._gmail_labels[(folder, uid)] = (msgid.decode(), labels)
        return False

    def _labelled(self, folder: str, messages: list[Message]) -> list[Message]:
        """Gmail: the labels (and Gmail's message id) on each record."""
        if not self._gmail_labels:
            return messages
        out = []
        for message in messages:
            found = self._gmail_labels.pop((folder, int(message.extra.get("uid", 0))), None)
            if found is not None:
                message = dataclasses.replace(message, extra={
                    **message.extra, "gmail_msgid": found[0], "labels": found[1]})
            out.append(message)
        return out

    def _uid_fetch(self, client: IMAPClient, uids: list[int], items: str
                   ) -> dict[int, dict[bytes, Any]]:
        """``UID FETCH`` through imaplib, parsed by :func:`parse_fetch`."""
        self.stats.fetches += 1
        typ, data = client._imap.uid("FETCH", uid_set(uids), items)
        if typ != "OK":
            raise SourceError(f"{self.where}: the server refused a FETCH ({_text(data[-1:])}); "
                              "will try again next sync")
        return parse_fetch(data)

    def max_message_bytes(self) -> int:
        return max(2 * self.context.max_attachment_bytes, MIN_MESSAGE_CAP)

    def _finish(self, folder: str, metas: list[Meta], backfill: bool = False) -> list[Message]:
        """Fetch the messages of one chunk and read them."""
        limit = self.max_message_bytes()
        together = [m.uid for m in metas if m.size <= min(STREAM_BYTES, limit)]
        bodies: dict[int, dict[bytes, Any]] = {}
        if together:
            def whole(client: IMAPClient) -> dict[int, dict[bytes, Any]]:
                return self._uid_fetch(client, together, "(UID BODY.PEEK[])")

            bodies = self._retrying(folder, whole)
        slots: list[Message | None] = []  # in UID order; None: read below
        items: list[tuple[bytes, datetime | None, dict[str, Any], bool]] = []
        for item in metas:
            extra: dict[str, Any] = {"folder": folder, "uid": item.uid}
            if item.size > limit:
                slots.append(self._too_large(folder, item, limit, extra))
                continue
            raw = (self._fetch_pieces(folder, item) if item.size > STREAM_BYTES
                   else bodies.get(item.uid, {}).get(b"BODY[]"))
            if not isinstance(raw, bytes):
                continue  # expunged since the first FETCH
            items.append((raw, item.date, extra, backfill))
            slots.append(None)
        del bodies
        read = iter(self._reader().read(items))
        messages = [slot if slot is not None else next(read) for slot in slots]
        self.stats.downloaded += sum(1 for m in messages for a in m.attachments
                                     if a.status == "stored")
        self.stats.messages += len(messages)
        return messages

    def _reader(self) -> ReaderPool:
        if self._pool is None:
            self._pool = ReaderPool(self.context, self.settings.reader_processes)
        return self._pool

    def _fetch_pieces(self, folder: str, item: Meta) -> bytes | None:
        """A big message, fetched in pieces of :data:`STREAM_PIECE` bytes."""
        data = bytearray()
        while True:
            items = f"(UID BODY.PEEK[]<{len(data)}.{STREAM_PIECE}>)"

            def piece(client: IMAPClient, items: str = items) -> bytes | None:
                found = self._uid_fetch(client, [item.uid], items).get(item.uid, {})
                for key, value in found.items():
                    if key.startswith(b"BODY[]"):
                        return value if isinstance(value, bytes) else b""
                return None

            chunk = self._retrying(folder, piece)
            if chunk is None:
                return None if not data else bytes(data)
            data += chunk
            if len(chunk) < STREAM_PIECE or len(data) > item.size + STREAM_PIECE:
                return bytes(data)

    def _too_large(self, folder: str, item: Meta, limit: int, extra: dict[str, Any]) -> Message:
        def header(client: IMAPClient) -> dict[int, dict[bytes, Any]]:
            return self._uid_fetch(client, [item.uid], "(UID BODY.PEEK[HEADER])")

        head = self._retrying(folder, header).get(item.uid, {}).get(b"BODY[HEADER]")
        self.log.warning(
            "%s: message UID %d in %r is %d bytes, over the %d byte message cap; kept its "
            "header only (raise agent.max_attachment_mb to read it)", self.context.source,
            item.uid, folder, item.size, limit)
        return too_large_message(head if isinstance(head, bytes) else b"", item.size, limit,
                                 item.date, extra)


def uid_set(uids: Sequence[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1:3,7,9:10"``."""
    ranges: list[str] = []
    start = prev = -2
    for uid in sorted(uids):
        if uid == prev + 1:
            prev = uid
            continue
        if start >= 0:
            ranges.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    if start >= 0:
        ranges.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(ranges)


def internal_date(value: Any) -> datetime | None:
    """An INTERNALDATE (``"01-Mar-2024 09:00:00 +0100"``) as an aware datetime."""
    if not isinstance(value, bytes):
        return None
    try:
        return datetime.strptime(value.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z")
    except (ValueError, UnicodeDecodeError):
        return None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_opening = threading.local()  # which connector this thread is connecting for
_WATCHED: Any = None


def _opened(sock: socket.socket) -> None:
    connector = getattr(_opening, "connector", None)
    if connector is not None:
        connector._opening_sock = sock


def _watched_client() -> Any:
    """An :class:`IMAPClient` whose socket is known as soon as it exists, so the watchdog
    can cut a greeting that trickles (imaplib reads it, and asks for CAPABILITY, inside
    the constructor)."""
    global _WATCHED
    if _WATCHED is not None:
        return _WATCHED
    from imapclient import IMAPClient, imap4, tls

    class Plain(imap4.IMAP4WithTimeout):  # type: ignore[misc]
        def _create_socket(self, timeout: float | None = None) -> socket.socket:
            sock: socket.socket = super()._create_socket(timeout)
            _opened(sock)
            return sock

    class Tls(tls.IMAP4_TLS):  # type: ignore[misc]
        def _create_socket(self, timeout: float | None = None) -> socket.socket:
            sock: socket.socket = super()._create_socket(timeout)
            _opened(sock)
            return sock

    class Watched(IMAPClient):  # type: ignore[misc]
        def _create_IMAP4(self) -> Any:
            if self.stream:
                return super()._create_IMAP4()
            connect_timeout = getattr(self._timeout, "connect", None)
            if self.ssl:
                return Tls(self.host, self.port, self.ssl_context, connect_timeout)
            return Plain(self.host, self.port, connect_timeout)

    _WATCHED = Watched
    return Watched


def _shutdown(client: IMAPClient) -> None:
    try:
        client.shutdown()
    except Exception:
        pass
