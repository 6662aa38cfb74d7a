"""The WireServer client: goal state and health reports.

Health reports go by the XML protocol (``POST /machine?comp=health``, the default) or, with
``[health] protocol = "json"``, to ``POST /provisioning/health`` as JSON, which needs no goal
state: 201 is success, 429 and 503 are retried under the HTTP policy (``Retry-After``
honoured), any other 4xx fails with the reason the WireServer gave.

An XML report is built from a goal state fetched for it (never a cached or hard-coded one); when
the WireServer answers 410 Gone the goal state has moved on, so a new one is fetched and the
report rebuilt.  All of it runs under one deadline per operation, through the shared HTTP policy.
"""

from __future__ import annotations

import json
import logging
from typing import Optional
from urllib.parse import urlsplit

from azprov import AGENT_NAME, USER_AGENT
from azprov.errors import (DESCRIPTION_LIMIT, FabricUnreachable, HttpStatusError, MissingRoleInstance,
                           ProtocolError)
from azprov.goalstate import GOAL_STATE_MAX_BYTES, GoalState, parse_goal_state
from azprov.health import HealthStatus, build_health_report
from azprov.http import Deadline, HttpClient, RetryPolicy

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "2012-11-30"
GOAL_STATE_PATH = "/machine/?comp=goalstate"
HEALTH_PATH = "/machine?comp=health"
JSON_HEALTH_PATH = "/provisioning/health"
ROLE_INSTANCE_ATTEMPTS = 6  # a goal state without RoleInstance is transient at boot
ROLE_INSTANCE_WAIT = 0.5
GONE_ATTEMPTS = 10  # successive 410s before giving up


def _origin(url: str) -> tuple:
    """(scheme, host, port) of ``url``, the port filled in; a malformed port counts as none."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return (parts.scheme, parts.hostname, -1)
    return (parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


class WireServerClient:
    def __init__(self, base_url: str, http: HttpClient, policy: RetryPolicy,
                 protocol: str = "xml") -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.policy = policy
        self.protocol = protocol
        self.headers = {"x-ms-version": PROTOCOL_VERSION, "x-ms-agent-name": AGENT_NAME}

    def goal_state(self, deadline: Optional[Deadline] = None) -> GoalState:
        """Fetch and parse the goal state, fetching again while RoleInstance is missing."""
        deadline = deadline or self.http.deadline(self.policy)
        for attempt in range(1, ROLE_INSTANCE_ATTEMPTS + 1):
            response = self.http.request(
                "GET",
                self.base_url + GOAL_STATE_PATH,
                policy=self.policy,
                what="goal state",
                headers=self.headers,
                max_bytes=GOAL_STATE_MAX_BYTES,
                deadline=deadline,
            )
            try:
                goal_state = parse_goal_state(response.body)
            except MissingRoleInstance:
                if attempt == ROLE_INSTANCE_ATTEMPTS or deadline.remaining() <= ROLE_INSTANCE_WAIT:
                    raise MissingRoleInstance(
                        f"goal state still has no RoleInstance after {attempt} fetches",
                        fetches=attempt,
                    ) from None
                log.info("goal state has no RoleInstance yet (fetch %d); fetching again", attempt)
                self.http.sleep(ROLE_INSTANCE_WAIT)
                continue
            log.info(
                "goal state: incarnation %d, container %s, instance %s",
                goal_state.incarnation, goal_state.container_id, goal_state.instance_id,
            )
            return goal_state
        raise AssertionError("unreachable")

    def document(self, url: str, what: str, max_bytes: int, deadline: Deadline) -> bytes:
        """GET one document the goal state points to (ExtensionsConfig...), only from the
        WireServer this client talks to: a URL naming another host is refused."""
        if _origin(url) != _origin(self.base_url):
            raise ProtocolError(f"the {what} URL points away from the WireServer "
                                f"({urlsplit(url).netloc[:100]!r}); not following it")
        response = self.http.request("GET", url, policy=self.policy, what=what, headers=self.headers,
                                     max_bytes=max_bytes, deadline=deadline)
        return response.body

    def report(self, status: HealthStatus, deadline: Optional[Deadline] = None, *,
               goal_state: Optional[GoalState] = None) -> Optional[GoalState]:
        """Post ``status`` by the configured protocol: XML for a freshly fetched goal state
        (returns the goal state it echoed), or JSON (returns None: no goal state involved).
        ``goal_state``: see :meth:`report_xml`."""
        if self.protocol == "json":
            self.report_json(status, deadline)
            return None
        return self.report_xml(status, deadline, goal_state=goal_state)

    def report_json(self, status: HealthStatus, deadline: Optional[Deadline] = None) -> None:
        """``POST /provisioning/health`` with ``{"state": ...}``; an error unless it is accepted."""
        document: dict = {"state": status.state}
        if not status.ready:
            document["details"] = {"subStatus": status.substatus.value if status.substatus else "Provisioning",
                                   "description": (status.description or "")[:DESCRIPTION_LIMIT]}
        self.http.request(
            "POST",
            self.base_url + JSON_HEALTH_PATH,
            policy=self.policy,
            what=f"JSON health report ({status.state})",
            headers={"x-ms-guest-agent-name": USER_AGENT, "Content-Type": "application/json"},
            body=json.dumps(document).encode("utf-8"),
            deadline=deadline or self.http.deadline(self.policy),
            error_body=True,
        )
        log.info("JSON health report %s accepted", status.state)

    def report_xml(self, status: HealthStatus, deadline: Optional[Deadline] = None, *,
                   goal_state: Optional[GoalState] = None) -> GoalState:
        """Post ``status`` for a freshly fetched goal state; returns the goal state it echoed.

        ``goal_state``: post for that one instead (a refused goal state's values, echoed in its
        failure report); a 410 then means it moved on, and a fresh one is fetched."""
        deadline = deadline or self.http.deadline(self.policy)
        given = goal_state
        for _ in range(GONE_ATTEMPTS):
            goal_state = given or self.goal_state(deadline)
            given = None
            body = build_health_report(goal_state, status)
            try:
                self.http.request(
                    "POST",
                    self.base_url + HEALTH_PATH,
                    policy=self.policy,
                    what=f"health report ({status.state})",
                    headers={**self.headers, "Content-Type": "text/xml;charset=utf-8"},
                    body=body,
                    deadline=deadline,
                    fail_fast=frozenset({410}),
                )
            except HttpStatusError as exc:
                if exc.status != 410:
                    raise
                log.info("health report: 410 Gone, the goal state moved on; fetching it again")
                continue
            log.info("health report %s accepted for incarnation %s", status.state,
                     goal_state.echoed_incarnation)
            return goal_state
        raise FabricUnreachable(
            f"health report: the WireServer answered 410 Gone {GONE_ATTEMPTS} times in a row",
            last="HTTP 410",
        )
