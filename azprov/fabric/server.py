"""``FabricEmulator``: the WireServer and IMDS listeners, request validation, the fault player
and the request log.

Each listener is a ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive, driven by its own
accept loop (so it can start listening late, for ``refuse_for``, and stop promptly).  Every
connection runs on a daemon thread; ``stop()`` shuts their sockets down and joins them with a
bound, so a response trickling out cannot hold it up.
"""

from __future__ import annotations

import datetime
import json
import selectors
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

from azprov.errors import ConfigError, ProtocolError
from azprov.fabric import documents
from azprov.fabric.scenario import STEP_ENDPOINTS, Listener, Scenario, Step
from azprov.goalstate import GoalState

Address = Optional[Tuple[str, int]]

MAX_REQUEST_BODY = 1024 * 1024
LOGGED_HEADERS = (
    "x-ms-version", "x-ms-agent-name", "x-ms-guest-agent-name", "metadata", "content-type",
    "x-ms-client-request-id", "user-agent",
)
PROXY_HEADERS = ("X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "Via",
                 "Proxy-Connection", "Proxy-Authorization")
XML = "text/xml; charset=utf-8"
JSON = "application/json; charset=utf-8"
STOP_JOIN_SECONDS = 2.0
ACCEPT_POLL_SECONDS = 0.05


class _Reply:
    """What to answer: status, content type, body, extra headers, and how to send it."""

    def __init__(self, status: int, body: bytes = b"", content_type: str = XML) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers: List[Tuple[str, str]] = []
        self.close = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real endpoints
    timeout = 60  # an idle keep-alive connection is closed after this
    server: "_Server"

    def version_string(self) -> str:
        return "azprov-fabric-emulator"

    def log_message(self, format: str, *args: Any) -> None:  # the JSON request log says it all
        pass

    def _dispatch(self) -> None:
        self.server.fabric._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], family: int, fabric: "FabricEmulator", kind: str) -> None:
        self.address_family = family
        self.fabric = fabric
        self.kind = kind
        super().__init__(address, _Handler, bind_and_activate=False)

    def server_bind(self) -> None:
        # Not HTTPServer.server_bind: it calls socket.getfqdn(), a reverse DNS lookup that can
        # stall for seconds in a network namespace without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        self.fabric._spawn(self, request, client_address)

    def handle_error(self, request, client_address) -> None:  # clients hanging up are not news
        pass


class _ListenerState:
    def __init__(self, kind: str, address: Tuple[str, int], settings: Listener) -> None:
        self.kind = kind
        self.address = address
        self.settings = settings
        self.server: Optional[_Server] = None
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


def _status_ok(status: Optional[int]) -> bool:
    return status is not None and 200 <= status < 300


class FabricEmulator:
    """An emulated WireServer and IMDS on two listeners, playing ``scenario``.

    ``wireserver``/``imds`` are ``(host, port)`` to listen on (port 0: any free port), or None
    to leave that listener out.  Request records go to ``fabric.requests`` and, as JSON lines,
    to ``log_path`` (appended) and/or ``log_stream``.
    """

    def __init__(
        self,
        scenario: Optional[Scenario] = None,
        *,
        wireserver: Address = ("127.0.0.1", 0),
        imds: Address = ("127.0.0.1", 0),
        log_path: Union[str, Path, None] = None,
        log_stream: Optional[IO[str]] = None,
    ) -> None:
        self.scenario = scenario if scenario is not None else Scenario()
        self._listeners: Dict[str, _ListenerState] = {}
        if wireserver is not None:
            self._listeners["wireserver"] = _ListenerState("wireserver", tuple(wireserver), self.scenario.wireserver)
        if imds is not None:
            self._listeners["imds"] = _ListenerState("imds", tuple(imds), self.scenario.imds_listener)
        self._log_path = Path(log_path) if log_path is not None else None
        self._log_stream = log_stream
        self._log_file: Optional[IO[str]] = None

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._state = "new"  # new -> started -> stopped
        self._started_at = time.monotonic()
        self._goal = documents.initial_goal_state(self.scenario)
        self._queues: Dict[str, List[list]] = {
            endpoint: [[index, step, 0] for index, step in enumerate(self.scenario.steps_for(endpoint))]
            for endpoint in STEP_ENDPOINTS
        }
        self._records: List[dict] = []
        self._reports: List[dict] = []
        self._provisioning_reports: List[dict] = []
        self._by_endpoint: Dict[str, int] = {}
        self._by_status: Dict[str, int] = {}
        self._in_flight = 0
        self._peak = 0
        self._throttled = 0
        rate = self.scenario.rate_limit
        self._tokens = float(rate.burst) if rate else 0.0
        self._tokens_at = time.monotonic()
        self._threads: set = set()
        self._connections: set = set()

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> "FabricEmulator":
        """Bind both listeners and serve (a listener with ``refuse_for`` listens only later)."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"the fabric emulator is {self._state}; start() works once")
            self._state = "started"
        if self._log_path is not None:
            self._log_file = open(self._log_path, "a", encoding="utf-8")
        try:
            for listener in self._listeners.values():
                host, port = listener.address
                try:
                    server = _Server((host, port), _family(host), self, listener.kind)
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
        except BaseException:
            self._close_listeners()
            self._close_log()
            with self._lock:
                self._state = "stopped"
            raise
        self._started_at = time.monotonic()
        self._tokens_at = self._started_at
        for listener in self._listeners.values():
            listener.thread = threading.Thread(
                target=self._accept_loop, args=(listener,), name=f"fabric-{listener.kind}", daemon=True
            )
            listener.thread.start()
        for listener in self._listeners.values():
            if not listener.settings.refuse_for:
                listener.listening.wait(STOP_JOIN_SECONDS)
        return self

    def stop(self) -> None:
        """Stop listening, cut open connections, join threads (bounded); safe to call twice."""
        with self._lock:
            state, self._state = self._state, "stopped"
        if state != "started":
            return
        self._stopping.set()
        deadline = time.monotonic() + STOP_JOIN_SECONDS
        for listener in self._listeners.values():
            if listener.thread is not None:
                listener.thread.join(max(0.0, deadline - time.monotonic()))
        self._close_listeners()
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
        self._close_log()

    def __enter__(self) -> "FabricEmulator":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _close_listeners(self) -> None:
        for listener in self._listeners.values():
            if listener.server is not None:
                try:
                    listener.server.server_close()
                except OSError:
                    pass

    def _close_log(self) -> None:
        with self._lock:
            log_file, self._log_file = self._log_file, None
        if log_file is not None:
            log_file.close()

    def _accept_loop(self, listener: _ListenerState) -> None:
        server = listener.server
        assert server is not None
        if listener.settings.refuse_for and self._stopping.wait(listener.settings.refuse_for):
            return  # bound but never listening: connections were refused the whole time
        try:
            server.server_activate()
            server.socket.settimeout(0)
        except OSError:
            return
        listener.listening.set()
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            while not self._stopping.is_set():
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

    def _spawn(self, server: _Server, request: socket.socket, client_address) -> None:
        thread = threading.Thread(target=self._connection, args=(server, request, client_address),
                                  name="fabric-connection", daemon=True)
        with self._lock:
            if self._stopping.is_set():
                thread = None
            else:
                self._threads.add(thread)
                self._connections.add(request)
        if thread is None:
            server.shutdown_request(request)
            return
        thread.start()

    def _connection(self, server: _Server, request: socket.socket, client_address) -> None:
        try:
            server.finish_request(request, client_address)
        except Exception:  # a client that hangs up mid-request, a timeout: nothing to report
            pass
        finally:
            server.shutdown_request(request)
            with self._lock:
                self._threads.discard(threading.current_thread())
                self._connections.discard(request)

    # --- what tests look at ---------------------------------------------------------------

    def _listener_url(self, kind: str) -> str:
        listener = self._listeners.get(kind)
        if listener is None:
            raise RuntimeError(f"this fabric emulator has no {kind} listener")
        if not listener.url:
            raise RuntimeError("the fabric emulator is not started")
        return listener.url

    @property
    def wireserver_url(self) -> str:
        return self._listener_url("wireserver")

    @property
    def imds_url(self) -> str:
        return self._listener_url("imds")

    @property
    def requests(self) -> List[dict]:
        """Every request so far, oldest first (records as in the JSON log)."""
        with self._lock:
            return [dict(record) for record in self._records]

    @property
    def reports(self) -> List[dict]:
        """Health reports answered with a 2xx: state, substatus, description, incarnation,
        container_id, instance_id, valid (no violations), t."""
        with self._lock:
            return [dict(report) for report in self._reports]

    @property
    def provisioning_reports(self) -> List[dict]:
        """Reports accepted on the JSON endpoint ``/provisioning/health``."""
        with self._lock:
            return [dict(report) for report in self._provisioning_reports]

    @property
    def goal_state(self) -> GoalState:
        with self._lock:
            return self._goal

    def move_goal_state(
        self, incarnation: Optional[int] = None, container_id: Optional[str] = None,
        instance_id: Optional[str] = None,
    ) -> GoalState:
        """Serve a new goal state from now on (incarnation + 1 unless given)."""
        with self._lock:
            goal = self._goal
            self._goal = GoalState(
                goal.incarnation + 1 if incarnation is None else incarnation,
                container_id or goal.container_id,
                instance_id or goal.instance_id,
            )
            return self._goal

    def wait_for_report(self, timeout: float = 10.0, state: Optional[str] = None) -> Optional[dict]:
        """The first accepted health report (with ``state``, if given); None after ``timeout``."""
        def first() -> Optional[dict]:
            for report in self._reports:
                if state is None or report["state"] == state:
                    return dict(report)
            return None

        with self._changed:
            self._changed.wait_for(lambda: first() is not None, timeout)
            return first()

    def stats(self) -> dict:
        with self._lock:
            return {
                "requests": len(self._records),
                "by_endpoint": dict(self._by_endpoint),
                "by_status": dict(self._by_status),
                "peak_concurrency": self._peak,
                "in_flight": self._in_flight,
                "throttled": self._throttled,
                "reports": len(self._reports),
            }

    # --- one request ------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        arrived = time.monotonic()
        with self._lock:
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        try:
            self._serve(handler, arrived)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _serve(self, h: _Handler, arrived: float) -> None:
        kind = h.server.kind
        method = h.command
        target = h.path
        violations: List[str] = []
        if target.startswith(("http://", "https://")):  # absolute form: what a client sends a proxy
            violations.append("request target in absolute form: the request came through a proxy")
            parts = urlsplit(target)
            path, query = parts.path or "/", parts.query
        else:
            path, _, query = target.partition("?")
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        for name in PROXY_HEADERS:
            if h.headers.get(name) is not None:
                violations.append(f"{name} header present: the fabric refuses proxied requests")
        endpoint = _classify(kind, path, params)
        record: Dict[str, Any] = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "t": round(arrived - self._started_at, 6),
            "listener": kind,
            "client": _client(h.client_address),
            "endpoint": endpoint,
            "method": method,
            "path": target[:512],
            "headers": {name: h.headers[name][:256] for name in LOGGED_HEADERS if h.headers.get(name) is not None},
            "status": None,
            "fault": None,
            "violations": violations,
        }
        reply: Optional[_Reply] = None
        step: Optional[Step] = None
        committed: List[bool] = []

        def commit() -> None:  # log the record once: before the answer completes, or at the end
            if not committed:
                committed.append(True)
                record["duration"] = round(time.monotonic() - arrived, 6)
                self._emit(record)

        try:
            body, problem = _read_body(h)
            if problem is not None:
                violations.append(problem)
                reply = self._error(kind, 413 if "limit" in problem else 400, problem)
                reply.close = True
            elif not self._take_token():
                rate = self.scenario.rate_limit
                assert rate is not None
                record["fault"] = "throttled"
                reply = self._error(kind, 429, "too many requests: rate limit of the scenario")
                reply.headers.append(("Retry-After", rate.retry_after))
            elif self._unavailable(kind):
                settings = self._listeners[kind].settings
                record["fault"] = "unavailable"
                reply = self._error(kind, 503, "service unavailable (scenario unavailable_for)")
                if settings.retry_after is not None:
                    reply.headers.append(("Retry-After", settings.retry_after))
            else:
                if endpoint in STEP_ENDPOINTS:
                    step, record["fault"] = self._next_step(endpoint)
                if step is not None and step.delay and self._stopping.wait(step.delay):
                    step = Step(drop=True)  # stopping: do not answer at all
                if step is not None and step.drop:
                    h.close_connection = True
                    return
                if step is not None and step.moves_goal_state and endpoint == "goalstate":
                    self._move(step)  # this answer already carries the new goal state
                reply = self._normal(endpoint, h, path, params, body, violations, record, step)
                if step is not None:
                    self._apply(step, reply, endpoint, kind)
                if endpoint == "health":
                    self._accept_report(record, reply)
                elif endpoint == "provisioning_health":
                    self._accept_provisioning_report(record, reply)
            self._send(h, reply, step, record, commit)
        except Exception as exc:  # an emulator bug or a client gone: log it, never crash the server
            if not committed:  # (after the commit, the record is already written out as it was)
                record["error"] = f"{type(exc).__name__}: {exc}"[:300]
            h.close_connection = True
            if record["status"] is None:  # nothing sent yet: say 500 rather than hang up
                try:
                    failure = self._error(kind, 500, f"fabric emulator error: {record.get('error', '')}")
                    failure.close = True
                    self._send(h, failure, None, record, commit)
                except Exception:  # noqa: BLE001 - the client is gone
                    pass
        finally:
            commit()

    def _take_token(self) -> bool:
        rate = self.scenario.rate_limit
        if rate is None:
            return True
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(rate.burst), self._tokens + (now - self._tokens_at) * rate.requests_per_second)
            self._tokens_at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            self._throttled += 1
            return False

    def _unavailable(self, kind: str) -> bool:
        seconds = self._listeners[kind].settings.unavailable_for
        return bool(seconds) and time.monotonic() - self._started_at < seconds

    def _next_step(self, endpoint: str) -> Tuple[Optional[Step], Optional[str]]:
        with self._lock:
            queue = self._queues[endpoint]
            if not queue:
                return None, None
            entry = queue[0]
            index, step, played = entry
            entry[2] = played = played + 1
            if played >= step.repeat:
                queue.pop(0)
        label = f"{endpoint}[{index}]"
        if step.repeat > 1:
            label += f" {played}/{step.repeat}"
        return step, f"{label}: {step.describe()}"

    def _error(self, kind: str, status: int, message: str) -> _Reply:
        if kind == "imds":
            return _Reply(status, documents.error_json(message), JSON)
        return _Reply(status, documents.error_xml(_code(status), message), XML)

    # --- normal behaviour of each endpoint -----------------------------------------------------

    def _normal(self, endpoint: str, h: _Handler, path: str, params: Dict[str, str], body: bytes,
                violations: List[str], record: Dict[str, Any], step: Optional[Step]) -> _Reply:
        method = h.command
        kind = h.server.kind
        expected = "POST" if endpoint in ("health", "provisioning_health") else "GET"
        if endpoint != "other" and method != expected:
            violations.append(f"{method} is not allowed here: {endpoint} takes {expected}")
            reply = self._error(kind, 405, violations[-1])
            reply.headers.append(("Allow", expected))
            return reply
        if endpoint == "goalstate":
            return self._goalstate(h, violations, role_instance=not (step and step.no_role_instance))
        if endpoint == "health":
            return self._health(h, body, violations, record)
        if endpoint == "provisioning_health":
            return self._provisioning_health(h, body, violations, record)
        if endpoint == "config":
            self._wireserver_headers(h, violations)
            if violations:
                return self._error(kind, 400, "; ".join(violations))
            content = documents.config_xml(self.goal_state, params.get("type", ""))
            if content is None:
                return self._error(kind, 404, "no such configuration document")
            return _Reply(200, content, XML)
        if endpoint == "versions":
            if violations:
                return self._error(kind, 400, "; ".join(violations))
            return _Reply(200, documents.versions_xml(), XML)
        if endpoint == "imds":
            return self._imds(h, path, params, violations)
        if endpoint == "imds_versions":
            if not self._imds_headers(h, violations):
                return self._error(kind, 400, "Bad request. " + "; ".join(violations))
            return _Reply(200, json.dumps({"apiVersions": list(self._api_versions())}).encode(), JSON)
        return self._error(kind, 404, f"nothing is served at {path[:200]}")

    def _wireserver_headers(self, h: _Handler, violations: List[str]) -> None:
        version = h.headers.get("x-ms-version")
        if version != documents.PROTOCOL_VERSION:
            violations.append(
                f"x-ms-version is {version!r}, expected {documents.PROTOCOL_VERSION!r}"
                if version is not None else f"x-ms-version header missing (expected {documents.PROTOCOL_VERSION})"
            )
        if not (h.headers.get("x-ms-agent-name") or "").strip():
            violations.append("x-ms-agent-name header missing or empty")

    def _goalstate(self, h: _Handler, violations: List[str], role_instance: bool) -> _Reply:
        self._wireserver_headers(h, violations)
        if violations:
            return self._error("wireserver", 400, "; ".join(violations))
        body = documents.goal_state_xml(self.goal_state, self._listener_url("wireserver"), role_instance)
        return _Reply(200, body, XML)

    def _health(self, h: _Handler, body: bytes, violations: List[str], record: Dict[str, Any]) -> _Reply:
        from azprov.health import parse_health_report

        self._wireserver_headers(h, violations)
        content_type = h.headers.get("Content-Type") or ""
        if content_type.split(";", 1)[0].strip().lower() != "text/xml":
            violations.append(f"Content-Type is {content_type[:64]!r}, expected text/xml;charset=utf-8")
        try:
            parsed = parse_health_report(body)
        except ProtocolError as exc:
            violations.append(str(exc)[:300])
        else:
            goal = self.goal_state
            sent = parsed.goal_state
            if sent.incarnation != goal.incarnation:
                violations.append(f"GoalStateIncarnation {sent.incarnation} is not the served incarnation {goal.incarnation}")
            if sent.container_id != goal.container_id:
                violations.append(f"ContainerId {sent.container_id[:80]!r} is not the served {goal.container_id!r}")
            if sent.instance_id != goal.instance_id:
                violations.append(f"InstanceId {sent.instance_id[:80]!r} is not the served {goal.instance_id!r}")
            status = parsed.status
            record["report"] = {
                "state": status.state,
                "substatus": status.substatus.value if status.substatus else None,
                "description": status.description,
                "incarnation": sent.incarnation,
                "container_id": sent.container_id,
                "instance_id": sent.instance_id,
            }
        if violations:
            return self._error("wireserver", 400, "; ".join(violations))
        return _Reply(200, b"", XML)

    def _provisioning_health(self, h: _Handler, body: bytes, violations: List[str],
                             record: Dict[str, Any]) -> _Reply:
        if not (h.headers.get("x-ms-guest-agent-name") or "").strip():
            violations.append("x-ms-guest-agent-name header missing or empty")
        content_type = h.headers.get("Content-Type") or ""
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            violations.append(f"Content-Type is {content_type[:64]!r}, expected application/json")
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            document = None
            violations.append("body is not JSON")
        if document is not None:
            state = document.get("state") if isinstance(document, dict) else None
            details = document.get("details") if isinstance(document, dict) else None
            if state not in ("Ready", "NotReady"):
                violations.append(f"state is {state!r}, expected 'Ready' or 'NotReady'")
            if details is not None and not isinstance(details, dict):
                violations.append("details is not an object")
                details = None
            details = details or {}
            substatus, description = details.get("subStatus"), details.get("description")
            if substatus is not None and substatus not in ("Provisioning", "ProvisioningFailed"):
                violations.append(f"details.subStatus is {substatus!r}")
            if description is not None and (not isinstance(description, str) or len(description) > 512):
                violations.append("details.description is not a string of at most 512 characters")
            record["report"] = {"state": state, "substatus": substatus,
                                "description": description if isinstance(description, str) else None}
        if violations:
            return self._error("wireserver", 400, "; ".join(violations))
        return _Reply(201, b"", JSON)

    def _api_versions(self) -> Tuple[str, ...]:
        return self.scenario.imds.api_versions or documents.KNOWN_API_VERSIONS

    def _imds_headers(self, h: _Handler, violations: List[str]) -> bool:
        """Metadata: true is required, and proxied requests are refused, as by the real IMDS."""
        if (h.headers.get("Metadata") or "").strip().lower() != "true":
            violations.append("Required metadata header not specified")
        return not violations

    def _imds(self, h: _Handler, path: str, params: Dict[str, str], violations: List[str]) -> _Reply:
        versions = self._api_versions()
        newest = sorted(versions, reverse=True)[:3]
        if not self._imds_headers(h, violations):
            return self._error("imds", 400, "Bad request. " + "; ".join(violations))
        version = params.get("api-version")
        if version is None or version not in versions:
            violations.append(f"api-version {version!r} is not known to this host" if version else
                              "api-version missing")
            message = ("Bad request. api-version was not specified in the request. "
                       if version is None else "Bad request. api-version is invalid or was not specified in the request. ")
            return _Reply(400, documents.error_json(message + "For more information refer to aka.ms/azureimds",
                                                    **{"newest-versions": newest}), JSON)
        extended = params.get("extended", "").lower() == "true" and version >= documents.EXTENDED_SINCE
        if self.scenario.imds.raw_body is not None:
            return _Reply(200, self.scenario.imds.raw_body, JSON)
        document: Any = documents.imds_document(self.scenario, extended)
        parts = [unquote(p) for p in path[len("/metadata/instance"):].split("/") if p]
        for part in parts:
            if isinstance(document, dict) and part in document:
                document = document[part]
            elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
                document = document[int(part)]
            else:
                return _Reply(404, documents.error_json("Not found"), JSON)
        if params.get("format") == "text":
            if isinstance(document, (dict, list)):
                text = "\n".join(str(k) for k in (document if isinstance(document, dict) else range(len(document))))
            else:
                text = "" if document is None else str(document)
            return _Reply(200, text.encode("utf-8"), "text/plain; charset=utf-8")
        return _Reply(200, json.dumps(document).encode("utf-8"), JSON)

    # --- scripted steps ---------------------------------------------------------------------

    def _apply(self, step: Step, reply: _Reply, endpoint: str, kind: str) -> None:
        if step.status is not None:
            normal_ok = _status_ok(reply.status)
            reply.status = step.status
            if step.body is None:
                if not _status_ok(step.status):
                    reply.body = self._error(kind, step.status, f"scripted fault: HTTP {step.status}").body
                    reply.content_type = JSON if kind == "imds" else XML
                elif not normal_ok:
                    reply.body = b""
        if step.body is not None:
            reply.body = step.body
        if step.retry_after is not None:
            reply.headers.append(("Retry-After", step.retry_after))
        for name, value in step.headers:
            if name.lower() == "content-type":
                reply.content_type = value
            else:
                reply.headers.append((name, value))
        if step.oversize is not None and len(reply.body) < step.oversize:
            missing = step.oversize - len(reply.body)
            if kind == "imds":  # trailing whitespace: still valid JSON, just too big
                reply.body += b" " * missing
            else:  # a trailing comment: still well-formed XML, just too big
                reply.body += b"<!--" + b"x" * max(0, missing - 7) + b"-->"
        if step.moves_goal_state and endpoint != "goalstate":  # after the report was checked
            self._move(step)

    def _move(self, step: Step) -> None:
        with self._lock:
            goal = self._goal
            if step.bump_incarnation:
                incarnation = goal.incarnation + 1
            elif step.new_incarnation is not None:
                incarnation = step.new_incarnation
            else:
                incarnation = goal.incarnation
            self._goal = GoalState(incarnation, step.new_container_id or goal.container_id,
                                   step.new_instance_id or goal.instance_id)

    def _accept_report(self, record: Dict[str, Any], reply: _Reply) -> None:
        report = record.get("report")
        if report is None or not _status_ok(reply.status):
            return
        accepted = dict(report, valid=not record["violations"], t=record["t"])
        with self._changed:
            self._reports.append(accepted)
            self._changed.notify_all()

    def _accept_provisioning_report(self, record: Dict[str, Any], reply: _Reply) -> None:
        report = record.get("report")
        if report is None or not _status_ok(reply.status):
            return
        with self._lock:
            self._provisioning_reports.append(dict(report, valid=not record["violations"], t=record["t"]))

    # --- sending --------------------------------------------------------------------------

    def _send(self, h: _Handler, reply: _Reply, step: Optional[Step], record: Dict[str, Any],
              commit: Callable[[], None]) -> None:
        """Write the answer; ``commit()`` logs the record just before the last write, so a client
        that has its whole answer also finds it in ``fabric.requests``."""
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
            self._trickle(h, sent, step.trickle, record, commit)
        elif sent:
            commit()
            h.wfile.write(sent)
        h.wfile.flush()
        if reply.close:
            try:
                h.connection.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _trickle(self, h: _Handler, body: bytes, rate: float, record: Dict[str, Any],
                 commit: Callable[[], None]) -> None:
        chunk = max(1, int(rate / 10))
        interval = chunk / rate
        for offset in range(0, len(body), chunk):
            if offset and self._stopping.wait(interval):
                record["bytes"] = offset
                h.close_connection = True
                return
            if offset + chunk >= len(body):
                commit()
            h.wfile.write(body[offset:offset + chunk])
            h.wfile.flush()

    def _emit(self, record: Dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._records.append(record)
            endpoint = record["endpoint"]
            self._by_endpoint[endpoint] = self._by_endpoint.get(endpoint, 0) + 1
            status = "dropped" if record["status"] is None else str(record["status"])
            self._by_status[status] = self._by_status.get(status, 0) + 1
            for stream in (self._log_file, self._log_stream):
                if stream is None:
                    continue
                try:
                    stream.write(line + "\n")
                    stream.flush()
                except (OSError, ValueError):  # a closed or broken log stream must not stop serving
                    pass


def _classify(kind: str, path: str, params: Dict[str, str]) -> str:
    comp = params.get("comp", "")
    if kind == "wireserver":
        if path in ("/machine", "/machine/") and comp == "goalstate":
            return "goalstate"
        if path in ("/machine", "/machine/") and comp == "health":
            return "health"
        if path.rstrip("/") == "/provisioning/health":
            return "provisioning_health"
        if path.startswith("/machine/") and comp == "config":
            return "config"
        if path == "/" and comp == "versions":
            return "versions"
        return "other"
    if path.rstrip("/") == "/metadata/instance" or path.startswith("/metadata/instance/"):
        return "imds"
    if path.rstrip("/") == "/metadata/versions":
        return "imds_versions"
    return "other"


def _client(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _code(status: int) -> str:
    return {400: "BadRequest", 404: "ResourceNotFound", 405: "MethodNotAllowed", 410: "Gone",
            413: "RequestEntityTooLarge", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable"}.get(status, f"HTTP{status}")


def _read_body(h: _Handler) -> Tuple[bytes, Optional[str]]:
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


def _read_chunked(h: _Handler) -> Tuple[bytes, Optional[str]]:
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
