"""TEST DOUBLE, clearly not Gmail: a loopback IMAP proxy that makes the tests' real Dovecot
look like Gmail's X-GM-EXT-1 extension, because Dovecot does not have it.

Everything passes through to Dovecot unchanged except:

* ``CAPABILITY`` answers (untagged and in ``[CAPABILITY ...]`` codes) gain ``X-GM-EXT-1``;
* in a ``UID FETCH`` asking for ``X-GM-MSGID`` / ``X-GM-LABELS``, the proxy removes those
  two items before Dovecot sees the command, and adds them to each ``* n FETCH (UID u ...``
  answer, computed from Dovecot's own data (``doveadm fetch``): the message id is a
  number derived from the Message-ID header (the same in every folder, as Gmail's is),
  and the labels are the folders that hold a message with that Message-ID (``INBOX`` is
  ``\\Inbox``, ``Sent`` is ``\\Sent``, ``All Mail`` is no label, like Gmail's All Mail).

It does not model anything else of Gmail (no X-GM-THRID, no X-GM-RAW searches, no label
changes through STORE). Listens on 127.0.0.1 only; stopped with :meth:`GmailProxy.close`.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.servers.dovecot import Dovecot, Mailbox

ALL_MAIL = "All Mail"
SYSTEM_LABELS = {"INBOX": "\\Inbox", "Sent": "\\Sent"}
_GM_ITEMS = re.compile(rb" X-GM-(?:MSGID|LABELS)\b", re.IGNORECASE)
_FETCH_UID = re.compile(rb"^\* \d+ FETCH \(UID (\d+) ")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


def gmail_msgid(message_id: str) -> int:
    return int(hashlib.sha256(message_id.encode()).hexdigest()[:15], 16)


@dataclass
class GmailProxy:
    server: Dovecot
    mailbox: Mailbox
    port: int = 0
    commands: list[bytes] = field(default_factory=list)  # what Dovecot received, rewritten
    gmail_fetches: int = 0  # UID FETCH commands that asked for X-GM-MSGID / X-GM-LABELS
    _listener: socket.socket | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _sockets: list[socket.socket] = field(default_factory=list)

    def start(self) -> GmailProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._spawn(self._accept)
        return self

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.server.host, self.server.port), timeout=30)
            self._sockets += [client, upstream]
            state: dict[str, object] = {"folder": "", "tags": set()}
            self._spawn(self._client_to_server, client, upstream, state)
            self._spawn(self._server_to_client, upstream, client, state)

    # -- the two directions ---------------------------------------------------------------

    def _client_to_server(self, client: socket.socket, upstream: socket.socket,
                          state: dict[str, object]) -> None:
        with contextlib.suppress(OSError):
            for line, literal in _lines(client):
                if literal is None:
                    line = self._rewrite_command(line, state)
                upstream.sendall(line)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _server_to_client(self, upstream: socket.socket, client: socket.socket,
                          state: dict[str, object]) -> None:
        with contextlib.suppress(OSError):
            for line, literal in _lines(upstream):
                if literal is None:
                    line = self._rewrite_answer(line, state)
                client.sendall(line)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)

    def _rewrite_command(self, line: bytes, state: dict[str, object]) -> bytes:
        words = line.split(b" ", 2)
        if len(words) >= 3 and words[1].upper() in (b"SELECT", b"EXAMINE"):
            state["folder"] = words[2].strip().strip(b'"').decode("utf-8", "replace")
        if len(words) >= 3 and words[1].upper() == b"UID" and _GM_ITEMS.search(words[2]):
            tags = state["tags"]
            assert isinstance(tags, set)
            tags.add(words[0])
            self.gmail_fetches += 1
            state["ids"] = self._message_ids()
            line = _GM_ITEMS.sub(b"", line)
        self.commands.append(line.rstrip(b"\r\n"))
        return line

    def _rewrite_answer(self, line: bytes, state: dict[str, object]) -> bytes:
        if line.startswith(b"* CAPABILITY ") or b"[CAPABILITY " in line:
            if line.startswith(b"* CAPABILITY "):
                line = line.rstrip(b"\r\n") + b" X-GM-EXT-1\r\n"
            else:
                head, _, tail = line.partition(b"[CAPABILITY ")
                caps, _, rest = tail.partition(b"]")
                line = head + b"[CAPABILITY " + caps + b" X-GM-EXT-1]" + rest
        tags = state["tags"]
        assert isinstance(tags, set)
        if tags:
            found = _FETCH_UID.match(line)
            if found:
                ids = state["ids"]
                assert isinstance(ids, dict)
                msgid, labels = gmail_data(ids, str(state["folder"]), int(found.group(1)))
                extra = f"X-GM-MSGID {msgid} X-GM-LABELS ({labels}) ".encode()
                line = line[:found.end()] + extra + line[found.end():]
            tag = line.split(b" ", 1)[0]
            if tag in tags:
                tags.discard(tag)
        return line

    def _message_ids(self) -> dict[tuple[str, int], str]:
        """(folder, uid) -> Message-ID of every message of the user, from Dovecot."""
        out = self.server.doveadm("-f", "tab", "fetch", "-u", self.mailbox.user,
                                  "mailbox uid hdr.message-id", "all")
        rows = [line.split("\t") for line in out.splitlines()[1:] if line.count("\t") >= 2]
        return {(m, int(u)): mid.strip() for m, u, mid in rows}


def gmail_data(ids: dict[tuple[str, int], str], folder: str, uid: int) -> tuple[int, str]:
    """Gmail's message id and labels for ``folder``/``uid``."""
    message_id = ids.get((folder, uid), f"<{folder}/{uid}@no-message-id>")
    folders = sorted({m for (m, _), mid in ids.items() if mid == message_id})
    labels = [SYSTEM_LABELS.get(m, f'"{m}"') for m in folders if m != ALL_MAIL]
    return gmail_msgid(message_id), " ".join(labels)


def _lines(sock: socket.socket) -> Iterator[tuple[bytes, int | None]]:
    """The stream as lines, and literals as raw chunks ``(bytes, length)`` (not parsed)."""
    buffer = b""
    pending = 0
    while True:
        if pending:
            if buffer:
                piece, buffer = buffer[:pending], buffer[pending:]
                pending -= len(piece)
                yield piece, len(piece)
                continue
        elif b"\r\n" in buffer:
            line, _, buffer = buffer.partition(b"\r\n")
            line += b"\r\n"
            literal = _LITERAL.search(line)
            if literal:
                pending = int(literal.group(1))
            yield line, None
            continue
        data = sock.recv(65536)
        if not data:
            if buffer:
                yield buffer, len(buffer)
            return
        buffer += data


@contextlib.contextmanager
def gmail_proxy(server: Dovecot, mailbox: Mailbox) -> Iterator[GmailProxy]:
    proxy = GmailProxy(server, mailbox).start()
    try:
        yield proxy
    finally:
        proxy.close()
