"""The one HTTP policy: every request azprov makes to the fabric goes through ``HttpClient``.

- Never proxied: the session ignores ``http_proxy``/``HTTP_PROXY``/``NO_PROXY`` and netrc
  (IMDS refuses proxied requests, and a dead proxy must not stop a VM from provisioning).
- Short connect timeout, bounded read timeout, and a cap on the whole attempt so a server that
  trickles bytes cannot hold an attempt open forever.
- Capped exponential backoff with full jitter (a scale set boots thousands of VMs at once),
  ``Retry-After`` honoured as a floor with the jittered backoff on top, one monotonic deadline
  per phase.
- One table, :func:`classify`, says which failures are retried.
- Every attempt is logged with its outcome and the wait before the next.

The clock, sleep and randomness are injectable so the policy is tested without waiting.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional
from urllib.parse import urlsplit

from azprov import USER_AGENT
from azprov.errors import FabricUnreachable, HttpStatusError, ProtocolError

log = logging.getLogger(__name__)

RETRY_AFTER_MAX = 120.0  # a hostile or confused server cannot park us longer than this per wait
LAST_ATTEMPT_MARGIN = 0.25  # the last attempt starts this long before the deadline


class Outcome(enum.Enum):
    SUCCESS = "success"
    RETRY = "retry"
    FAIL = "fail"


# The retry table.  Connection errors, timeouts and broken bodies are always retried.
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# IMDS answers 404/410 for a while early in boot, before the VM's metadata is in place.
RETRIED_EARLY_BOOT_STATUSES = frozenset({404, 410})


def classify(status: int, retry_not_found: bool = False) -> Outcome:
    """Whether an HTTP status is success, worth another attempt, or final."""
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status in RETRIED_STATUSES or 500 <= status < 600:
        return Outcome.RETRY
    if retry_not_found and status in RETRIED_EARLY_BOOT_STATUSES:
        return Outcome.RETRY
    return Outcome.FAIL


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one phase (WireServer or IMDS)."""

    deadline: float  # seconds for the whole phase
    # The defaults of [http] in the configuration (azprov.config.HttpConfig takes them from here).
    connect_timeout: float = 3.0
    read_timeout: float = 30.0
    attempt_timeout: float = 60.0  # one whole attempt, body included (trickling servers)
    backoff_initial: float = 0.5
    backoff_max: float = 3.0
    jitter: bool = True
    retry_not_found: bool = False

    def backoff(self, failures: int, rng: Callable[[], float]) -> float:
        """Wait after the ``failures``-th failed attempt: capped exponential, full jitter."""
        ceiling = min(self.backoff_max, self.backoff_initial * (2 ** min(failures - 1, 32)))
        return ceiling * rng() if self.jitter else ceiling


@dataclass
class Deadline:
    """A point on the monotonic clock; ``remaining()`` never goes below zero."""

    at: float
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> "Deadline":
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return max(0.0, self.at - self.clock())

    def end(self) -> None:
        """From now on there is no time left: a request under it makes no further attempt
        (one in flight finishes or times out)."""
        self.at = min(self.at, self.clock())


@dataclass(frozen=True)
class Response:
    """A response whose status the retry table accepted, body read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class _RetryableFailure(Exception):
    """One attempt failed in a way the table says is worth retrying."""

    def __init__(self, description: str, retry_after: Optional[float] = None) -> None:
        super().__init__(description)
        self.retry_after = retry_after


def _retry_after(value: Optional[str], now: Callable[[], float] = time.time) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX)
    import email.utils  # only for an HTTP-date Retry-After: not on every start-up's import path

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - now()), RETRY_AFTER_MAX)


def _new_session():
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.trust_env = False  # no proxies from the environment, no netrc
    session.proxies = {}
    adapter = HTTPAdapter(max_retries=0, pool_connections=2, pool_maxsize=2)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


class HttpClient:
    """Sends requests under a :class:`RetryPolicy`.  One per process is enough."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        session=None,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self._session = session
        self._session_lock = threading.Lock()

    @property
    def session(self):
        with self._session_lock:  # the goal state and IMDS may be fetched from two threads
            if self._session is None:
                self._session = _new_session()
            return self._session

    def prepare(self) -> None:
        """Import what a request needs and open the session now (see ``clients.Fabric.prepare``)."""
        import uuid  # noqa: F401 - for the request ids of IMDS

        self.session  # noqa: B018

    def deadline(self, policy: RetryPolicy) -> Deadline:
        return Deadline.after(policy.deadline, self.clock)

    def request(
        self,
        method: str,
        url: str,
        *,
        policy: RetryPolicy,
        what: str,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[bytes] = None,
        max_bytes: int = 1024 * 1024,
        deadline: Optional[Deadline] = None,
        request_id: bool = False,
        fail_fast: frozenset = frozenset(),
        error_body: bool = False,
    ) -> Response:
        """Send until success, a final failure, or the deadline.

        Returns the 2xx response.  Raises :class:`HttpStatusError` for a status the table does
        not retry (or one listed in ``fail_fast``, which the caller handles itself, like 410 on
        a health report; with ``error_body`` its message carries the start of the answer's body,
        the server's reason), :class:`ProtocolError` for a body over ``max_bytes``, and
        :class:`FabricUnreachable` when the deadline passes first.
        """
        deadline = deadline or self.deadline(policy)
        attempt = 0
        last_failure = "no attempt was made"
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                break
            attempt += 1
            attempt_headers = dict(headers or {})
            if request_id:
                import uuid

                attempt_headers["x-ms-client-request-id"] = str(uuid.uuid4())
            started = self.clock()
            try:
                response = self._attempt(method, url, policy, attempt_headers, body, max_bytes, remaining)
            except _RetryableFailure as failure:
                last_failure = str(failure)
                retry_after = failure.retry_after
            else:
                outcome = classify(response.status, policy.retry_not_found)
                elapsed_ms = (self.clock() - started) * 1000
                if outcome is Outcome.SUCCESS:
                    log.info("%s: attempt %d: HTTP %d in %.0f ms", what, attempt, response.status, elapsed_ms)
                    return response
                if outcome is Outcome.FAIL or response.status in fail_fast:
                    why = _reason(response.body) if error_body else ""
                    log.warning("%s: attempt %d: HTTP %d%s, not retried", what, attempt, response.status,
                                f" ({why})" if why else "")
                    raise HttpStatusError(
                        f"{what}: {method} {url} answered HTTP {response.status}"
                        + (f": {why}" if why else ""),
                        response.status,
                    )
                last_failure = f"HTTP {response.status}"
                retry_after = _retry_after(response.headers.get("Retry-After"))
            wait = policy.backoff(attempt, self.rng)
            if retry_after is not None:
                # Retry-After is a floor, not a rendezvous: the jittered backoff goes on top, or
                # every throttled VM of a scale set would come back at the same instant.
                wait = retry_after + (wait if policy.jitter else 0.0)
            remaining = deadline.remaining()
            if wait >= remaining:
                if remaining < LAST_ATTEMPT_MARGIN * 2:
                    log.warning(
                        "%s: attempt %d failed: %s; no time left for another (deadline in %.1f s)",
                        what, attempt, last_failure, remaining,
                    )
                    break
                wait = remaining - LAST_ATTEMPT_MARGIN  # one last attempt just before the deadline
            log.info(
                "%s: attempt %d failed: %s; retrying in %.2f s%s (deadline in %.1f s)",
                what, attempt, last_failure, wait,
                (f" (Retry-After {retry_after:g} s{' + jitter' if policy.jitter else ''})"
                 if retry_after is not None else ""),
                remaining,
            )
            self.sleep(wait)
        raise FabricUnreachable(
            f"{what}: no answer from {urlsplit(url).netloc} before the deadline "
            f"({policy.deadline:g} s, {attempt} attempt{'s' if attempt != 1 else ''}; last: {last_failure})",
            attempts=attempt,
            last=last_failure,
        )

    def _attempt(self, method, url, policy, headers, body, max_bytes, remaining) -> Response:
        import http.client

        import requests
        import urllib3

        connect_timeout = max(0.05, min(policy.connect_timeout, remaining))
        read_timeout = max(0.05, min(policy.read_timeout, remaining))
        attempt_limit = min(policy.attempt_timeout, remaining)
        started = self.clock()
        try:
            with self.session.request(
                method,
                url,
                headers={"Accept-Encoding": "identity", **headers},
                data=body,
                timeout=(connect_timeout, read_timeout),
                allow_redirects=False,
                stream=True,
            ) as raw:
                content = self._read_body(raw, f"{method} {url}", max_bytes, started, attempt_limit)
                return Response(raw.status_code, raw.headers, content)
        except requests.exceptions.ConnectTimeout:
            raise _RetryableFailure(f"connect timeout after {connect_timeout:.1f} s") from None
        except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
            raise _RetryableFailure(f"read timeout after {read_timeout:.1f} s") from None
        except requests.exceptions.ConnectionError as exc:
            raise _RetryableFailure(f"connection failed: {_root_cause(exc)}") from None
        except (requests.exceptions.ChunkedEncodingError, http.client.HTTPException,
                urllib3.exceptions.HTTPError) as exc:
            raise _RetryableFailure(f"response cut short: {_root_cause(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise _RetryableFailure(f"request failed: {_root_cause(exc)}") from None
        except OSError as exc:  # reset or broken connection while reading the body
            raise _RetryableFailure(f"connection failed while reading: {_root_cause(exc)}") from None

    def _read_body(self, raw, what: str, max_bytes: int, started: float, limit: float) -> bytes:
        """Read the body in whatever pieces arrive, so a trickling server meets the attempt
        limit; refuse more than ``max_bytes``; a body shorter than its Content-Length is a
        failed attempt (urllib3 1.26 does not check that itself)."""
        stream = raw.raw
        read1 = getattr(stream, "read1", None) or stream._fp.read1  # urllib3 2.x, else 1.26's http.client
        chunks = []
        size = 0
        while True:
            chunk = read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise ProtocolError(f"{what}: response is over the {max_bytes}-byte limit")
            chunks.append(chunk)
            if self.clock() - started > limit:
                raise _RetryableFailure(f"response too slow: {size} bytes in {limit:.0f} s")
        expected = raw.headers.get("Content-Length", "")
        if expected.isdigit() and int(expected) != size:
            raise _RetryableFailure(f"response cut short: {size} of {expected} bytes")
        return b"".join(chunks)


def _reason(body: bytes, limit: int = 200) -> str:
    """The start of an error answer, as one printable line (it is untrusted: no controls)."""
    text = body[: limit * 4].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _root_cause(exc: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 exception chain, on one line."""
    seen = exc
    while True:
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        inner = inner or getattr(seen, "reason", None)
        if not isinstance(inner, BaseException) or inner is seen:
            break
        seen = inner
    text = str(seen) or type(seen).__name__
    if "Connection refused" in text:
        return "connection refused"
    return " ".join(text.split())[:200]
