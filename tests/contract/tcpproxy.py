"""A loopback TCP relay a test can cut, slow down or hang, in front of a real server.

* :meth:`TcpProxy.cut`: refuse new connections and drop open ones (an outage).
* ``trickle_after=N``: relay the server's first N bytes of each connection at full speed,
  then one byte every ``trickle_every`` seconds (a server that never trips a socket timeout).
* ``hang=True``: accept connections and never answer (a black hole).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    """Relays 127.0.0.1:<port> to ``target``; :meth:`cut` refuses new connections and
    drops the open ones, like a network outage."""

    def __init__(self, target: tuple[str, int], *, trickle_after: int | None = None,
                 trickle_every: float = 2.0, hang: bool = False) -> None:
        self.target = target
        self.trickle_after = trickle_after
        self.trickle_every = trickle_every
        self.hang = hang
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.is_cut = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut:
                client.close()
                return
            if self.hang:  # keep it open, say nothing
                with self.lock:
                    self.sockets.append(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b, limit in ((client, upstream, None), (upstream, client, self.trickle_after)):
                threading.Thread(target=self._pump, args=(a, b, limit), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, trickle_after: int | None
              ) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if trickle_after is None or sent + len(data) <= trickle_after:
                    sink.sendall(data)
                    sent += len(data)
                    continue
                fast = max(trickle_after - sent, 0)
                sink.sendall(data[:fast])
                for i in range(fast, len(data)):
                    if self.is_cut:
                        return
                    time.sleep(self.trickle_every)
                    sink.sendall(data[i:i + 1])
                sent += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self.is_cut = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() and stops listening
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self.sockets.clear()

    close = cut
