"""``FabricEmulator``: an emulated WireServer and IMDS, its life cycle and its request log.

One request goes: read the body (``listeners``), the rate limit and the outage window
(``faults``), the next scripted step of its endpoint (``faults``), the endpoint's normal answer
(``endpoints``), the step's changes to it (``faults``), the reply (``listeners``); the record of
it goes to the request log once, just before the last byte of the answer is written.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qs, urlsplit

from azprov.fabric import documents, endpoints, faults, listeners
from azprov.fabric.endpoints import Reply, Request, Served
from azprov.fabric.listeners import Handler
from azprov.fabric.scenario import STEP_ENDPOINTS, Scenario, Step
from azprov.goalstate import GoalState

Address = Optional[Tuple[str, int]]

LOGGED_HEADERS = (
    "x-ms-version", "x-ms-agent-name", "x-ms-guest-agent-name", "metadata", "content-type",
    "x-ms-client-request-id", "user-agent",
)
PROXY_HEADERS = ("X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "Via",
                 "Proxy-Connection", "Proxy-Authorization")


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
        self._listeners = listeners.Listeners(self._handle)
        if wireserver is not None:
            self._listeners.add("wireserver", wireserver, self.scenario.wireserver)
        if imds is not None:
            self._listeners.add("imds", imds, self.scenario.imds_listener)
        self._stopping = self._listeners.stopping
        self._log_path = Path(log_path) if log_path is not None else None
        self._log_stream = log_stream
        self._log_file: Optional[IO[str]] = None

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = "new"  # new -> started -> stopped
        self._started_at = time.monotonic()
        self._goal = documents.initial_goal_state(self.scenario)
        self._steps = faults.StepQueue(self.scenario)
        self._bucket = faults.TokenBucket(self.scenario.rate_limit)
        self._records: List[dict] = []
        self._reports: List[dict] = []
        self._provisioning_reports: List[dict] = []
        self._by_endpoint: Dict[str, int] = {}
        self._by_status: Dict[str, int] = {}
        self._in_flight = 0
        self._peak = 0

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
            self._listeners.bind()
        except BaseException:
            self._listeners.close()
            self._close_log()
            with self._lock:
                self._state = "stopped"
            raise
        self._started_at = time.monotonic()
        self._bucket.restart(self._started_at)
        self._listeners.serve()
        return self

    def stop(self) -> None:
        """Stop listening, cut open connections, join threads (bounded); safe to call twice."""
        with self._lock:
            state, self._state = self._state, "stopped"
        if state != "started":
            return
        self._listeners.stop()
        self._close_log()

    def __enter__(self) -> "FabricEmulator":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _close_log(self) -> None:
        with self._lock:
            log_file, self._log_file = self._log_file, None
        if log_file is not None:
            log_file.close()

    # --- what tests look at ---------------------------------------------------------------

    @property
    def wireserver_url(self) -> str:
        return self._listeners.url("wireserver")

    @property
    def imds_url(self) -> str:
        return self._listeners.url("imds")

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
                "throttled": self._bucket.throttled,
                "reports": len(self._reports),
            }

    # --- one request ------------------------------------------------------------------------

    def _handle(self, handler: Handler) -> None:
        arrived = time.monotonic()
        with self._lock:
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        try:
            self._serve(handler, arrived)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _serve(self, h: Handler, arrived: float) -> None:
        kind = h.server.kind
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
        endpoint = endpoints.classify(kind, path, params)
        record: Dict[str, Any] = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "t": round(arrived - self._started_at, 6),
            "listener": kind,
            "client": listeners.client_text(h.client_address),
            "endpoint": endpoint,
            "method": h.command,
            "path": target[:512],
            "headers": {name: h.headers[name][:256] for name in LOGGED_HEADERS if h.headers.get(name) is not None},
            "status": None,
            "fault": None,
            "violations": violations,
        }
        committed: List[bool] = []

        def commit() -> None:  # log the record once: before the answer completes, or at the end
            if not committed:
                committed.append(True)
                record["duration"] = round(time.monotonic() - arrived, 6)
                self._emit(record)

        try:
            request = Request(kind, h.command, path, params, h.headers, b"", violations)
            reply = self._reply(h, endpoint, request, record)
            if reply is not None:
                self._send(h, reply, request.step, record, commit)
        except Exception as exc:  # an emulator bug or a client gone: log it, never crash the server
            if not committed:  # (after the commit, the record is already written out as it was)
                record["error"] = f"{type(exc).__name__}: {exc}"[:300]
            h.close_connection = True
            if record["status"] is None:  # nothing sent yet: say 500 rather than hang up
                try:
                    failure = endpoints.error(kind, 500, f"fabric emulator error: {record.get('error', '')}")
                    failure.close = True
                    self._send(h, failure, None, record, commit)
                except Exception:  # noqa: BLE001 - the client is gone
                    pass
        finally:
            commit()

    def _reply(self, h: Handler, endpoint: str, request: Request, record: Dict[str, Any]) -> Optional[Reply]:
        """The answer to one request, faults played; None: hang up without answering."""
        kind = request.listener
        body, problem = listeners.read_body(h)
        request.body = body
        if problem is not None:
            request.violations.append(problem)
            reply = endpoints.error(kind, 413 if "limit" in problem else 400, problem)
            reply.close = True
            return reply
        if not self._bucket.take():
            rate = self.scenario.rate_limit
            assert rate is not None
            record["fault"] = "throttled"
            reply = endpoints.error(kind, 429, "too many requests: rate limit of the scenario")
            reply.headers.append(("Retry-After", rate.retry_after))
            return reply
        settings = self._listeners.by_kind[kind].settings
        if faults.in_outage(settings, time.monotonic() - self._started_at):
            record["fault"] = "unavailable"
            reply = endpoints.error(kind, 503, "service unavailable (scenario unavailable_for)")
            if settings.retry_after is not None:
                reply.headers.append(("Retry-After", settings.retry_after))
            return reply
        step: Optional[Step] = None
        if endpoint in STEP_ENDPOINTS:
            step, record["fault"] = self._steps.next(endpoint)
        if step is not None and step.delay and self._stopping.wait(step.delay):
            step = Step(drop=True)  # stopping: do not answer at all
        if step is not None and step.drop:
            h.close_connection = True
            return None
        request.step = step
        if step is not None and step.moves_goal_state and endpoint == "goalstate":
            self._move(step)  # this answer already carries the new goal state
        reply = endpoints.answer(endpoint, request, self._served())
        if reply.report is not None:
            record["report"] = reply.report
        if step is not None:
            faults.apply_step(step, reply, kind)
            if step.moves_goal_state and endpoint != "goalstate":  # after the report was checked
                self._move(step)
        if endpoint in ("health", "provisioning_health") and reply.report is not None and endpoints.ok(reply.status):
            accepted = dict(reply.report, valid=not record["violations"], t=record["t"])
            with self._changed:
                (self._reports if endpoint == "health" else self._provisioning_reports).append(accepted)
                self._changed.notify_all()
        return reply

    def _served(self) -> Served:
        wireserver = self._listeners.by_kind.get("wireserver")
        return Served(self.scenario, self.goal_state, wireserver.url if wireserver else "")

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

    # --- sending and recording ------------------------------------------------------------------

    def _send(self, h: Handler, reply: Reply, step: Optional[Step], record: Dict[str, Any],
              commit: Callable[[], None]) -> None:
        listeners.send(h, reply, step, record, commit, self._stopping)

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
