"""The emulator's HTTP side: listeners, connections, reading request bodies, writing replies.

Each listener is a ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive, driven by its own
accept loop (so it can start listening late, for ``refuse_for``, and stop promptly).  Every
connection runs on a daemon thread; :meth:`Listeners.stop` shuts their sockets down and joins
them with a bound, so a response trickling out cannot hold it up.
"""

from __future__ import annotations

import selectors
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

from azprov.errors import ConfigError
from azprov.fabric import faults
from azprov.fabric.endpoints import Reply
from azprov.fabric.scenario import Listener, Step

MAX_REQUEST_BODY = 1024 * 1024
STOP_JOIN_SECONDS = 2.0
ACCEPT_POLL_SECONDS = 0.05


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real endpoints
    timeout = 60  # an idle keep-alive connection is closed after this
    server: "Server"

    def version_string(self) -> str:
        return "azprov-fabric-emulator"

    def log_message(self, format: str, *args: Any) -> None:  # the JSON request log says it all
        pass

    def _dispatch(self) -> None:
        self.server.dispatch(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], family: int, kind: str,
                 dispatch: Callable[[Handler], None], spawn: Callable[..., None]) -> None:
        self.address_family = family
        self.kind = kind
        self.dispatch = dispatch
        self._spawn = spawn
        super().__init__(address, Handler, bind_and_activate=False)

    def server_bind(self) -> None:
        # Not HTTPServer.server_bind: it calls socket.getfqdn(), a reverse DNS lookup that can
        # stall for seconds in a network namespace without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        self._spawn(self, request, client_address)

    def handle_error(self, request, client_address) -> None:  # clients hanging up are not news
        pass


class ListenerState:
    def __init__(self, kind: str, address: Tuple[str, int], settings: Listener) -> None:
        self.kind = kind
        self.address = address
        self.settings = settings
        self.server: Optional[Server] = None
        self.thread: Optional[threading.Thread] = None
        self.url = ""
        self.listening = threading.Event()


def _family(host: str) -> int:
    if ":" in host:
        return socket.AF_INET6
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    return infos[0][0]


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def client_text(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


class Listeners:
    """The listeners of one emulator, their accept loops and their connection threads."""

    def __init__(self, dispatch: Callable[[Handler], None]) -> None:
        self.by_kind: Dict[str, ListenerState] = {}
        self.stopping = threading.Event()
        self._dispatch = dispatch
        self._lock = threading.Lock()
        self._threads: set = set()
        self._connections: set = set()

    def add(self, kind: str, address: Tuple[str, int], settings: Listener) -> None:
        self.by_kind[kind] = ListenerState(kind, tuple(address), settings)

    def bind(self) -> None:
        """Bind every listener (the port is known from now on); ConfigError if one cannot."""
        for listener in self.by_kind.values():
            host, port = listener.address
            try:
                server = Server((host, port), _family(host), listener.kind, self._dispatch, self._spawn)
            except OSError as exc:
                raise ConfigError(f"fabric emulator: cannot use {host}:{port}: {exc.strerror or exc}") from None
            listener.server = server
            try:
                server.server_bind()  # bound now (the port is known), listening maybe later
            except OSError as exc:
                raise ConfigError(
                    f"fabric emulator: cannot listen on {host}:{port} ({listener.kind}): {exc.strerror or exc}"
                ) from None
            listener.url = _url(server.server_address[0], server.server_address[1])

    def serve(self) -> None:
        """Start the accept loops; wait until those without ``refuse_for`` listen."""
        for listener in self.by_kind.values():
            listener.thread = threading.Thread(
                target=self._accept_loop, args=(listener,), name=f"fabric-{listener.kind}", daemon=True
            )
            listener.thread.start()
        for listener in self.by_kind.values():
            if not listener.settings.refuse_for:
                listener.listening.wait(STOP_JOIN_SECONDS)

    def stop(self) -> None:
        """Stop listening, cut open connections, join threads (bounded)."""
        self.stopping.set()
        deadline = time.monotonic() + STOP_JOIN_SECONDS
        for listener in self.by_kind.values():
            if listener.thread is not None:
                listener.thread.join(max(0.0, deadline - time.monotonic()))
        self.close()
        with self._lock:
            connections = list(self._connections)
            threads = list(self._threads)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for listener in self.by_kind.values():
            if listener.server is not None:
                try:
                    listener.server.server_close()
                except OSError:
                    pass

    def url(self, kind: str) -> str:
        listener = self.by_kind.get(kind)
        if listener is None:
            raise RuntimeError(f"this fabric emulator has no {kind} listener")
        if not listener.url:
            raise RuntimeError("the fabric emulator is not started")
        return listener.url

    def _accept_loop(self, listener: ListenerState) -> None:
        server = listener.server
        assert server is not None
        if listener.settings.refuse_for and self.stopping.wait(listener.settings.refuse_for):
            return  # bound but never listening: connections were refused the whole time
        try:
            server.server_activate()
            server.socket.settimeout(0)
        except OSError:
            return
        listener.listening.set()
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            while not self.stopping.is_set():
                if not selector.select(ACCEPT_POLL_SECONDS):
                    continue
                try:
                    request, client_address = server.get_request()
                except OSError:
                    continue
                request.settimeout(None)
                try:  # headers and body go out in separate writes: no Nagle/delayed-ACK stalls
                    request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
                server.process_request(request, client_address)

    def _spawn(self, server: Server, request: socket.socket, client_address) -> None:
        thread = threading.Thread(target=self._connection, args=(server, request, client_address),
                                  name="fabric-connection", daemon=True)
        with self._lock:
            if self.stopping.is_set():
                thread = None
            else:
                self._threads.add(thread)
                self._connections.add(request)
        if thread is None:
            server.shutdown_request(request)
            return
        thread.start()

    def _connection(self, server: Server, request: socket.socket, client_address) -> None:
        try:
            server.finish_request(request, client_address)
        except Exception:  # a client that hangs up mid-request, a timeout: nothing to report
            pass
        finally:
            server.shutdown_request(request)
            with self._lock:
                self._threads.discard(threading.current_thread())
                self._connections.discard(request)


# --- reading and writing ---------------------------------------------------------------------

def read_body(h: Handler) -> Tuple[bytes, Optional[str]]:
    """The request body, or a problem that ends the connection (too big, malformed framing)."""
    if (h.headers.get("Transfer-Encoding") or "").strip().lower() == "chunked":
        return _read_chunked(h)
    length = h.headers.get("Content-Length")
    if length is None:
        return b"", None
    if not length.strip().isdigit():
        return b"", f"Content-Length {length[:32]!r} is not a number"
    size = int(length)
    if size > MAX_REQUEST_BODY:
        return b"", f"request body of {size} bytes is over the {MAX_REQUEST_BODY}-byte limit"
    data = h.rfile.read(size)
    if len(data) < size:
        return b"", f"request body cut short: {len(data)} of {size} bytes"
    return data, None


def _read_chunked(h: Handler) -> Tuple[bytes, Optional[str]]:
    parts: List[bytes] = []
    total = 0
    while True:  # bounded: every pass reads at least one line, the total is capped
        line = h.rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip() or b"x", 16)
        except ValueError:
            return b"", "malformed chunked request body"
        if size == 0:
            for _ in range(100):  # trailers, up to the blank line
                if h.rfile.readline(1024) in (b"\r\n", b"\n", b""):
                    return b"".join(parts), None
            return b"", "too many trailers after a chunked request body"
        total += size
        if total > MAX_REQUEST_BODY:
            return b"", f"request body is over the {MAX_REQUEST_BODY}-byte limit"
        data = h.rfile.read(size)
        if len(data) < size:
            return b"", "chunked request body cut short"
        parts.append(data)
        h.rfile.readline(1024)


def send(h: Handler, reply: Reply, step: Optional[Step], record: Dict[str, Any],
         commit: Callable[[], None], stopping: threading.Event) -> None:
    """Write the answer (cut short or trickled if the step says so); ``commit()`` logs the record
    just before the last write, so a client that has its whole answer also finds it logged."""
    body = reply.body
    declared = len(body)
    sent = body if h.command != "HEAD" else b""
    if step is not None and step.truncate is not None:  # promise the whole body, send part of it
        cut = len(body) // 2 if step.truncate < 0 else min(step.truncate, max(0, len(body) - 1))
        sent = body[:cut]
        declared = max(declared, 16)
        reply.close = True
    record["status"] = reply.status
    record["bytes"] = len(sent)
    h.send_response(reply.status)
    h.send_header("Content-Type", reply.content_type)
    h.send_header("Content-Length", str(declared))
    for name, value in reply.headers:
        h.send_header(name, value)
    if reply.close:
        h.send_header("Connection", "close")
        h.close_connection = True
    if not sent:
        commit()
    h.end_headers()
    if sent and step is not None and step.trickle:
        def write(data: bytes) -> None:
            h.wfile.write(data)
            h.wfile.flush()

        stopped_at = faults.trickle(write, sent, step.trickle, stopping, commit)
        if stopped_at is not None:
            record["bytes"] = stopped_at
            h.close_connection = True
    elif sent:
        commit()
        h.wfile.write(sent)
    h.wfile.flush()
    if reply.close:
        try:
            h.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
