"""The IMAP connector: STATUS-first incremental sync, batched FETCH, per-part downloads.

How one sync goes, per configured folder:

1. ``STATUS folder (UIDNEXT UIDVALIDITY MESSAGES [HIGHESTMODSEQ])``. When UIDVALIDITY and
   UIDNEXT equal what the cursor remembers, nothing arrived: the folder costs this one
   command (no SELECT), so a sync with nothing new is LOGIN + one STATUS per folder.
2. Otherwise ``EXAMINE`` (read-only: flags are never changed) and ``UID SEARCH`` for the
   UIDs above the last one read. A changed UIDVALIDITY resets the folder: every message
   is read again, and the store's upsert by Message-ID keeps it from being doubled.
3. Per batch of UIDs, one ``UID FETCH (RFC822.SIZE INTERNALDATE BODYSTRUCTURE
   BODY.PEEK[HEADER])``. The structure says which parts to fetch: the text/plain part(s)
   (or text/html when there is none) and, only when the sender is a contractor and the
   part is under the size cap, the attachments. Those parts are fetched with one
   ``UID FETCH (BODY.PEEK[1.1] BODY.PEEK[2] ...)`` per distinct part list in the batch.
4. Each batch becomes a :class:`~agent.models.Page` whose cursor names the last UID in
   it; the host commits it after storing the records.

A connection dropped mid-sync is reopened and the interrupted command repeated, at most
``max_reconnects`` times per sync; after that the sync ends with
:class:`~agent.errors.TransientError` and resumes from the last committed page next time.
"""

from __future__ import annotations

import binascii
import contextlib
import copy
import dataclasses
import email.utils
import logging
import os
import re
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from queue import Full, Queue
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from agent.connector import Connector, SourceContext
from agent.deadline import Watchdog
from agent.errors import AuthError, SourceError, TransientError, UnsupportedOperation
from agent.files import sanitize_filename
from agent.mail import (
    MAX_TEXT_CHARS,
    HeaderInfo,
    build_message,
    clean_text,
    decode_header_value,
    decode_text,
    html_to_text,
    mail_extra,
    parse_header_bytes,
    scrub,
)
from agent.models import Attachment, Cursor, Message, Outgoing, Page
from plugins.imap.settings import ImapSettings

if TYPE_CHECKING:
    # imapclient and ssl are imported by the methods that use them, so registering the
    # plugin (every `retainer` start) does not pay for them.
    import ssl

    from imapclient import IMAPClient

    from agent.oauth import TokenManager

CURSOR_VERSION = 1
#: Most bytes (as the server declares them) fetched in one part-FETCH command, and kept
#: in one page: bigger batches are split so memory stays bounded.
CHUNK_BYTES = 24 * 1024 * 1024
#: Attachments larger than this (encoded) are fetched on their own, in pieces of
#: :data:`STREAM_PIECE` bytes, and decoded into a file in the scratch folder.
STREAM_BYTES = 8 * 1024 * 1024
STREAM_PIECE = 4 * 1024 * 1024
#: Text parts larger than this (encoded) are not fetched; the message gets a defect.
MAX_TEXT_PART_BYTES = 8 * 1024 * 1024
#: Body parts of one message looked at; the rest are ignored with a defect.
MAX_PARTS = 1000
MAX_DEPTH = 100

#: The header fields Retainer keeps (the rest, Received: lines and all, is not fetched).
HEADER_FIELDS = "DATE FROM SENDER TO CC SUBJECT MESSAGE-ID IN-REPLY-TO REFERENCES"
META_ITEMS = f"(UID RFC822.SIZE INTERNALDATE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"
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
class Part:
    """One leaf of a BODYSTRUCTURE."""

    section: str
    maintype: str
    subtype: str
    params: dict[str, str]
    encoding: str
    size: int
    content_id: str = ""
    disposition: str = ""
    disposition_params: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return f"{self.maintype}/{self.subtype}"

    @property
    def filename(self) -> str:
        name = param(self.disposition_params, "filename") or param(self.params, "name")
        return decode_header_value(name) if name else ""

    @property
    def charset(self) -> str | None:
        value = self.params.get("charset")
        return value if value and "\x00" not in value else None

    @property
    def is_attachment(self) -> bool:
        if self.disposition == "attachment":
            return True
        if self.maintype == "message":
            return True
        return self.maintype not in ("text", "multipart") or bool(self.filename)

    @property
    def is_inline_image(self) -> bool:
        return (self.maintype == "image" and self.disposition != "attachment"
                and (self.disposition == "inline" or bool(self.content_id)))

    @property
    def decoded_estimate(self) -> int:
        return self.size * 3 // 4 if self.encoding == "base64" else self.size


@dataclass
class Plan:
    """What to do with one message after its header and structure arrived."""

    uid: int
    info: HeaderInfo
    size: int
    text_parts: list[Part]
    html: bool  # the text parts are HTML (there was no text/plain)
    download: list[Part]
    skipped: list[Attachment]  # attachment records that need no download, in order
    order: list[Part]  # every attachment part, in message order
    defects: list[str]

    @property
    def sections(self) -> tuple[str, ...]:
        """The parts fetched together with other messages' (big ones come on their own)."""
        return tuple(sorted({p.section for p in self.text_parts}
                            | {p.section for p in self.download if p.size <= STREAM_BYTES}))

    @property
    def fetch_bytes(self) -> int:
        return (sum(p.size for p in self.text_parts)
                + sum(p.size for p in self.download if p.size <= STREAM_BYTES))


# -- BODYSTRUCTURE helpers -------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return scrub(value.decode("utf-8", "surrogateescape"))
    if isinstance(value, str):
        return scrub(value)
    return str(value)


def _params(value: Any) -> dict[str, str]:
    """``("CHARSET", "utf-8", "NAME", "x.pdf")`` -> ``{"charset": "utf-8", "name": "x.pdf"}``."""
    found: dict[str, str] = {}
    if not isinstance(value, tuple | list):
        return found
    items = list(value)
    for index in range(0, len(items) - 1, 2):
        key = _text(items[index]).lower()
        if key and key not in found:
            found[key] = _text(items[index + 1])
    return found


def param(params: dict[str, str], name: str) -> str:
    """A parameter value, with RFC 2231 (``name*``, ``name*0*``...) decoded."""
    if name in params:
        return params[name]
    if f"{name}*" in params:
        return _rfc2231(params[f"{name}*"], extended=True)
    pieces: list[tuple[int, str, bool]] = []
    prefix = f"{name}*"
    for key, value in params.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        extended = rest.endswith("*")
        number = rest.rstrip("*")
        if number.isdigit() and len(number) < 4:
            pieces.append((int(number), value, extended))
    if not pieces:
        return ""
    pieces.sort()
    charset = "utf-8"
    out = bytearray()
    for position, (_, value, extended) in enumerate(pieces):
        if extended:
            if position == 0 and value.count("'") >= 2:
                charset, _, value = value.split("'", 2)
            out += urllib.parse.unquote_to_bytes(value)
        else:
            out += value.encode("utf-8", "surrogateescape")
    return decode_text(bytes(out), charset or "utf-8")


def _rfc2231(value: str, *, extended: bool) -> str:
    if not extended:
        return value
    try:
        charset, _language, text = email.utils.decode_rfc2231(value)
    except Exception:
        return value
    if charset is None:
        return urllib.parse.unquote(text)
    return decode_text(urllib.parse.unquote_to_bytes(text), charset)


def _disposition(value: Any) -> tuple[str, dict[str, str]]:
    if isinstance(value, tuple | list) and value:
        return _text(value[0]).lower(), _params(value[1] if len(value) > 1 else None)
    return "", {}


def _int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return max(number, 0)


def walk_structure(body: Any, defects: list[str]) -> list[Part]:
    """The leaf parts of a BODYSTRUCTURE (as :func:`parse_fetch` returns it), with their
    sections (``1``, ``1.2``...).

    Never raises: unexpected shapes add a defect and are skipped. Does not recurse.
    """
    parts: list[Part] = []
    stack: list[tuple[Any, str, int]] = [(body, "", 0)]
    while stack:
        node, prefix, depth = stack.pop()
        if len(parts) >= MAX_PARTS:
            defects.append("TooManyParts")
            break
        if not isinstance(node, tuple | list) or not node:
            defects.append("BadBodyStructure")
            continue
        if isinstance(node[0], list):  # multipart: (child) (child) subtype params ...
            if depth >= MAX_DEPTH:
                defects.append("TooDeeplyNested")
                continue
            children = []
            for child in node:
                if not isinstance(child, list):
                    break
                children.append(child)
            base = f"{prefix}." if prefix else ""
            for index in range(len(children) - 1, -1, -1):
                stack.append((children[index], f"{base}{index + 1}", depth + 1))
            continue
        try:
            parts.append(_leaf(node, prefix or "1"))
        except (IndexError, TypeError, ValueError):
            defects.append("BadBodyStructure")
    return parts


def _leaf(node: Sequence[Any], section: str) -> Part:
    maintype = _text(node[0]).lower() or "application"
    subtype = _text(node[1]).lower() or "octet-stream"
    params = _params(node[2])
    content_id = _text(node[3]) if len(node) > 3 else ""
    encoding = _text(node[5]).lower() if len(node) > 5 else ""
    size = _int(node[6]) if len(node) > 6 else 0
    if maintype == "text":
        ext = 8
    elif maintype == "message" and subtype in ("rfc822", "global"):
        ext = 10
    else:
        ext = 7
    disposition, disposition_params = "", dict[str, str]()
    if len(node) > ext + 1:
        disposition, disposition_params = _disposition(node[ext + 1])
    return Part(section, maintype, subtype, params, encoding, size, content_id,
                disposition, disposition_params)


def decode_transfer(data: bytes, encoding: str, defects: list[str]) -> bytes:
    """Undo a part's Content-Transfer-Encoding; never raises."""
    if encoding == "base64":
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            cleaned = bytes(b for b in data if b in _B64)
            cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
            defects.append("InvalidBase64")
            try:
                return binascii.a2b_base64(cleaned)
            except (binascii.Error, ValueError):
                return data
    if encoding == "quoted-printable":
        try:
            return binascii.a2b_qp(data)
        except (binascii.Error, ValueError):
            defects.append("InvalidQuotedPrintable")
            return data
    return data


_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _short(name: str, limit: int = 80) -> str:
    return repr(name[:limit]) + ("..." if len(name) > limit else "")



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
        self._scratch: set[Path] = set()  # files of big attachments not yet released
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
        for path in list(self._scratch):
            self._forget(path)
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
            for page in self.pages(cursor):
                yield page
                self._release(page)
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
                    self._release(value)
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

    def _read_batch(self, folder: str, uids: list[int], uidvalidity: int
                    ) -> Iterator[tuple[list[Message], int]]:
        """Messages of ``uids`` in chunks of bounded size, each with its last UID."""

        gmail = b"X-GM-EXT-1" in self.capabilities

        def meta(client: IMAPClient) -> dict[int, dict[bytes, Any]]:
            return self._uid_fetch(client, uids, GMAIL_META_ITEMS if gmail else META_ITEMS)

        found = self._retrying(folder, meta)
        plans: list[Plan] = []
        for uid in uids:
            data = found.get(uid)
            if data is None:
                continue  # expunged in the meantime
            if gmail and self._gmail_repeat(folder, uid, data):
                continue  # read in another folder (label) already
            plans.append(self._plan(uid, data, folder))
        if not plans:
            yield [], uids[-1]
            return
        chunk: list[Plan] = []
        chunk_bytes = 0
        for index, plan in enumerate(plans):
            if chunk and chunk_bytes + plan.fetch_bytes > CHUNK_BYTES:
                yield self._labelled(folder, self._finish(folder, chunk, uidvalidity)), chunk[-1].uid
                chunk, chunk_bytes = [], 0
            chunk.append(plan)
            chunk_bytes += plan.fetch_bytes
            if index == len(plans) - 1:
                yield self._labelled(folder, self._finish(folder, chunk, uidvalidity)), uids[-1]

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

    def _plan(self, uid: int, data: dict[bytes, Any], folder: str) -> Plan:
        defects: list[str] = []
        raw_header = b""
        for key, value in data.items():
            if key.startswith(b"BODY[HEADER") and isinstance(value, bytes):
                raw_header = value
                break
        fallback = internal_date(data.get(b"INTERNALDATE"))
        info = parse_header_bytes(raw_header, fallback_date=fallback)
        parts = walk_structure(data.get(b"BODYSTRUCTURE"), defects)
        plain: list[Part] = []
        html: list[Part] = []
        attachments: list[Part] = []
        for part in parts:
            if part.maintype == "multipart":
                continue
            if part.is_attachment:
                attachments.append(part)
            elif part.subtype == "html":
                html.append(part)
            else:
                plain.append(part)
        text_parts = plain or html
        if any(p.size > MAX_TEXT_PART_BYTES for p in text_parts):
            defects.append("TextPartTooLarge")
            text_parts = [p for p in text_parts if p.size <= MAX_TEXT_PART_BYTES]
        context = self.context
        wants = context.wants_attachments(info.sender) and not context.is_owner(info.sender)
        download: list[Part] = []
        skipped: list[Attachment] = []
        where = f"{context.source}: message {info.remote_id}"
        for part in attachments:
            filename = part.filename or _default_name(part)
            safe = sanitize_filename(filename)
            if safe != filename:
                self.log.warning("%s: attachment name %s is unsafe; it will be stored as %s",
                                 where, _short(filename), _short(safe))
            estimate = part.decoded_estimate
            if part.is_inline_image or not wants:
                skipped.append(Attachment(filename, part.content_type, size=estimate,
                                          remote_id=f"part-{part.section}",
                                          status="not_downloaded", inline=part.is_inline_image))
            elif estimate > context.max_attachment_bytes:
                self.log.warning(
                    "%s: attachment %s (about %d bytes) is over the %d byte cap; recorded, "
                    "not downloaded (raise agent.max_attachment_mb to keep it)",
                    where, _short(safe), estimate, context.max_attachment_bytes)
                skipped.append(Attachment(filename, part.content_type, size=estimate,
                                          remote_id=f"part-{part.section}", status="too_large",
                                          note=f"over the {context.max_attachment_bytes} byte cap"))
            else:
                download.append(part)
        return Plan(uid, info, _int(data.get(b"RFC822.SIZE")), text_parts, not plain and bool(html),
                    download, skipped, attachments, defects)

    def _finish(self, folder: str, plans: list[Plan], uidvalidity: int) -> list[Message]:
        """Fetch the parts the plans need (one FETCH per distinct section list) and build
        the messages."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for plan in plans:
            if plan.sections:
                groups.setdefault(plan.sections, []).append(plan.uid)
        bodies: dict[int, dict[bytes, Any]] = {}
        for sections, group in groups.items():
            items = "(UID " + " ".join(f"BODY.PEEK[{s}]" for s in sections) + ")"

            def parts(client: IMAPClient, group: list[int] = group,
                      items: str = items) -> dict[int, dict[bytes, Any]]:
                return self._uid_fetch(client, group, items)

            bodies.update(self._retrying(folder, parts))
        messages = [self._message(plan, bodies.get(plan.uid, {}), folder) for plan in plans]
        self.stats.messages += len(messages)
        return messages

    def _stream(self, folder: str, uid: int, part: Part, filename: str, defects: list[str]
                ) -> Attachment:
        """Fetch one big part in pieces, decoding it into a file in the scratch folder."""
        scratch = self.context.scratch_dir
        scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".imap-", suffix=".part", dir=scratch)
        path = Path(name)
        self._scratch.add(path)
        decoder = _StreamDecoder(part.encoding)
        written = offset = 0
        with os.fdopen(fd, "wb") as handle:
            while True:
                item = f"(UID BODY.PEEK[{part.section}]<{offset}.{STREAM_PIECE}>)"

                def piece(client: IMAPClient, item: str = item) -> bytes | None:
                    found = self._uid_fetch(client, [uid], item).get(uid, {})
                    for key, value in found.items():
                        if key.startswith(f"BODY[{part.section}]".encode()):
                            return value if isinstance(value, bytes) else b""
                    return None

                data = self._retrying(folder, piece)
                if data is None:
                    break
                offset += len(data)
                chunk = decoder.feed(data, final=len(data) < STREAM_PIECE)
                handle.write(chunk)
                written += len(chunk)
                if len(data) < STREAM_PIECE or offset > part.size + STREAM_PIECE:
                    break
        if decoder.defect:
            defects.append(decoder.defect)
        if offset == 0:
            defects.append("MissingPart")
            self._forget(path)
            return Attachment(filename, part.content_type, size=part.decoded_estimate,
                              remote_id=f"part-{part.section}", status="not_downloaded",
                              note="the server did not return this part")
        self.stats.downloaded += 1
        return Attachment(filename, part.content_type, size=written, path=path,
                          remote_id=f"part-{part.section}")

    def _forget(self, path: Path) -> None:
        self._scratch.discard(path)
        path.unlink(missing_ok=True)

    def _release(self, page: Page) -> None:
        """Delete the scratch files of a page the host has stored (it copies them)."""
        for record in page.records:
            for attachment in getattr(record, "attachments", ()):
                if attachment.path is not None and attachment.path in self._scratch:
                    self._forget(attachment.path)

    def _message(self, plan: Plan, body: dict[bytes, Any], folder: str) -> Message:
        defects = plan.defects
        texts: list[str] = []
        for part in plan.text_parts:
            raw = body.get(f"BODY[{part.section}]".encode())
            if not isinstance(raw, bytes):
                defects.append("MissingPart")
                continue
            texts.append(decode_text(decode_transfer(raw, part.encoding, defects), part.charset))
        html = ""
        if plan.html:
            html = scrub("\n".join(texts))[:MAX_TEXT_CHARS]
            text = html_to_text(html)
        else:
            text = clean_text("\n\n".join(texts))
        if len(text) > MAX_TEXT_CHARS:
            text = text[:MAX_TEXT_CHARS]
            defects.append("TextTruncated")
        skipped = iter(plan.skipped)
        downloads = {p.section for p in plan.download}
        attachments: list[Attachment] = []
        for part in plan.order:
            if part.section not in downloads:
                attachments.append(next(skipped))
                continue
            filename = part.filename or _default_name(part)
            if part.size > STREAM_BYTES:
                attachments.append(self._stream(folder, plan.uid, part, filename, defects))
                continue
            raw = body.get(f"BODY[{part.section}]".encode())
            if not isinstance(raw, bytes):
                defects.append("MissingPart")
                attachments.append(Attachment(filename, part.content_type,
                                              size=part.decoded_estimate,
                                              remote_id=f"part-{part.section}",
                                              status="not_downloaded",
                                              note="the server did not return this part"))
                continue
            data = decode_transfer(raw, part.encoding, defects)
            self.stats.downloaded += 1
            attachments.append(Attachment(filename, part.content_type, size=len(data), data=data,
                                          remote_id=f"part-{part.section}"))
        info = plan.info
        extra = {**mail_extra(info, defects), "folder": folder, "uid": plan.uid}
        if defects:
            self.log.warning("%s: message %s has MIME defects (%s); kept what could be read",
                             self.context.source, info.remote_id, ", ".join(sorted(set(defects))))
        return build_message(info, text, attachments, extra, html=html)


class _StreamDecoder:
    """Undo a transfer encoding piece by piece (pieces may split base64 groups and
    quoted-printable escapes anywhere)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.rest = b""
        self.defect = ""

    def feed(self, data: bytes, *, final: bool) -> bytes:
        if self.encoding == "base64":
            data = self.rest + data.translate(None, b"\r\n \t")
            cut = len(data) if final else len(data) - len(data) % 4
            self.rest = data[cut:]
            defects: list[str] = []
            out = decode_transfer(data[:cut], "base64", defects)
            if defects:
                self.defect = defects[0]
            return out
        if self.encoding == "quoted-printable":
            data = self.rest + data
            cut = len(data) if final else data.rfind(b"\n") + 1
            self.rest = data[cut:]
            return binascii.a2b_qp(data[:cut])
        return data


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


def _default_name(part: Part) -> str:
    if part.maintype == "message":
        return f"message-{part.section}.eml"
    return f"part-{part.section}"


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
