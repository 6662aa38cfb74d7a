"""The faults the emulator plays: the rate limit (a token bucket), the outage window after start,
the queue of scripted steps of each endpoint, what a step does to an answer, and trickling a body
out slowly.  Each is independent of HTTP and of the emulator's life cycle.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from azprov.fabric.endpoints import JSON, XML, Reply, error, ok
from azprov.fabric.scenario import STEP_ENDPOINTS, Listener, RateLimit, Scenario, Step


class TokenBucket:
    """``scenario.rate_limit`` over every request: ``burst`` tokens, refilled continuously."""

    def __init__(self, rate: Optional[RateLimit]) -> None:
        self.rate = rate
        self.throttled = 0  # requests refused so far
        self._tokens = float(rate.burst) if rate else 0.0
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def restart(self, now: float) -> None:
        with self._lock:
            self._at = now

    def take(self) -> bool:
        """One token for this request, or False (and one more throttled) when there is none."""
        rate = self.rate
        if rate is None:
            return True
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(rate.burst), self._tokens + (now - self._at) * rate.requests_per_second)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            self.throttled += 1
            return False


def in_outage(settings: Listener, since_start: float) -> bool:
    """Whether a listener still answers 503 (``unavailable_for`` seconds after start)."""
    seconds = settings.unavailable_for
    return bool(seconds) and since_start < seconds


class StepQueue:
    """The scripted steps of every endpoint, each answering ``repeat`` requests in turn."""

    def __init__(self, scenario: Scenario) -> None:
        self._lock = threading.Lock()
        self._queues: Dict[str, List[list]] = {
            endpoint: [[index, step, 0] for index, step in enumerate(scenario.steps_for(endpoint))]
            for endpoint in STEP_ENDPOINTS
        }

    def next(self, endpoint: str) -> Tuple[Optional[Step], Optional[str]]:
        """The step that answers this request of ``endpoint`` and its label for the request log,
        or (None, None) when the script is played out (or the endpoint has none)."""
        with self._lock:
            queue = self._queues.get(endpoint)
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


def apply_step(step: Step, reply: Reply, listener: str) -> None:
    """Change the normal answer as the step says: status, body, headers, padding."""
    if step.status is not None:
        normal_ok = ok(reply.status)
        reply.status = step.status
        if step.body is None:
            if not ok(step.status):
                reply.body = error(listener, step.status, f"scripted fault: HTTP {step.status}").body
                reply.content_type = JSON if listener == "imds" else XML
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
        if listener == "imds":  # trailing whitespace: still valid JSON, just too big
            reply.body += b" " * missing
        else:  # a trailing comment: still well-formed XML, just too big
            reply.body += b"<!--" + b"x" * max(0, missing - 7) + b"-->"


def trickle(write: Callable[[bytes], object], body: bytes, rate: float, stopping: threading.Event,
            before_last: Callable[[], None]) -> Optional[int]:
    """Write ``body`` at about ``rate`` bytes per second, in tenths of a second; ``before_last()``
    runs just before the last piece.  Returns the bytes written if stopped early, else None."""
    chunk = max(1, int(rate / 10))
    interval = chunk / rate
    for offset in range(0, len(body), chunk):
        if offset and stopping.wait(interval):
            return offset
        if offset + chunk >= len(body):
            before_last()
        write(body[offset:offset + chunk])
    return None
