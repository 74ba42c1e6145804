"""Fault injection on a real network path: a TCP proxy that cuts a transfer half way.

    with CuttingProxy("127.0.0.1", port, cut_after=150_000) as proxy:
        requests.get(proxy.url_for("/dicom-web/studies/1.2.3"), ...)   # the answer stops after 150,000 bytes

Every connection to the proxy (127.0.0.1, a free port) is forwarded to ``host:port``. The client's bytes pass
unchanged; once ``cut_after`` bytes of the server's answer have reached the client on a connection, the proxy closes
both sockets of that connection (the client sees the connection end, not an HTTP error). ``cut_after=None`` passes
everything. Standard library only (usable from both virtual environments).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import TracebackType


class CuttingProxy:
    """A threaded TCP proxy on 127.0.0.1 that ends each connection after ``cut_after`` bytes towards the client."""

    def __init__(self, host: str, port: int, *, cut_after: int | None = None) -> None:
        self.target = (host, port)
        self.cut_after = cut_after
        self.connections = 0  # accepted so far
        self.cuts = 0  # connections ended by the cut
        self.bytes_to_client = 0  # over all connections
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]

    def url_for(self, path: str = "") -> str:
        """``http://127.0.0.1:PORT`` + ``path`` (which starts with ``/``)."""
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> CuttingProxy:
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting, close every socket and wait for the threads."""
        self._stop.set()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            _close(s)
        for t in list(self._threads):
            t.join(timeout=5)
        self._listener.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self.connections += 1
                self._sockets += [client, server]
            self._spawn(self._pump, client, server, False)
            self._spawn(self._pump, server, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        """Copy ``src`` to ``dst``. Towards the client: after ``cut_after`` bytes, or at the server's EOF, close both
        sockets. Towards the server: the client's EOF half-closes the server's side (its answer still comes back)."""
        limit = self.cut_after if to_client else None
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: limit - sent])
                    self._count(limit - sent, cut=True)
                    break
                dst.sendall(data)
                sent += len(data)
                if to_client:
                    self._count(len(data))
            if not to_client:
                dst.shutdown(socket.SHUT_WR)
                return
        except OSError:
            pass
        _close(src)
        _close(dst)

    def _count(self, n: int, cut: bool = False) -> None:
        with self._lock:
            self.bytes_to_client += n
            self.cuts += int(cut)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
