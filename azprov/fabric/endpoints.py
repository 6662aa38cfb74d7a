"""The emulated WireServer and IMDS endpoints: functions from a request to a reply.

Each endpoint is one function ``(Request, Served) -> Reply`` and one row of :data:`ROUTES`: its
name, the listener it is on, its method, and how its path and query are recognised.  To add an
endpoint, write the function and add its row; if scenarios may script its answers, also add its
name (and the step keys it takes) to ``scenario.py``.

A function checks the request as the real endpoint would: what is wrong goes in
``request.violations`` (the request log shows it) and the answer is a 400.  A health report it
accepts goes in ``reply.report``; the emulator records it once the (possibly scripted) status is
known.  Nothing here touches the network or the emulator's state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import unquote

from azprov.errors import ProtocolError
from azprov.fabric import documents
from azprov.fabric.instance import EXTENDED_SINCE, KNOWN_API_VERSIONS
from azprov.fabric.scenario import Scenario, Step
from azprov.goalstate import GoalState

XML = "text/xml; charset=utf-8"
JSON = "application/json; charset=utf-8"


@dataclass
class Request:
    """One request as the endpoints see it."""

    listener: str  # "wireserver" or "imds"
    method: str
    path: str  # without the query
    params: Dict[str, str]  # the query, first value of each name
    headers: Any  # case-insensitive ``get(name)``
    body: bytes
    violations: List[str] = field(default_factory=list)  # what is wrong with it, so far
    step: Optional[Step] = None  # the scripted step that answers it, if any


@dataclass(frozen=True)
class Served:
    """What the endpoints know of the emulator: the scenario and the goal state now."""

    scenario: Scenario
    goal_state: GoalState
    wireserver_url: str  # the base of the URLs in the goal state


class Reply:
    """What to answer: status, content type, body, extra headers, and how to send it."""

    def __init__(self, status: int, body: bytes = b"", content_type: str = XML) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers: List[Tuple[str, str]] = []
        self.close = False
        self.report: Optional[Dict[str, Any]] = None  # a health report, as the request log shows it


def ok(status: Optional[int]) -> bool:
    return status is not None and 200 <= status < 300


def error(listener: str, status: int, message: str) -> Reply:
    """An error answer in the listener's format: JSON for IMDS, the WireServer's XML otherwise."""
    if listener == "imds":
        return Reply(status, documents.error_json(message), JSON)
    return Reply(status, documents.error_xml(_code(status), message), XML)


def _code(status: int) -> str:
    return {400: "BadRequest", 404: "ResourceNotFound", 405: "MethodNotAllowed", 410: "Gone",
            413: "RequestEntityTooLarge", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable"}.get(status, f"HTTP{status}")


# --- the WireServer ----------------------------------------------------------------------------

def _wireserver_headers(request: Request) -> None:
    version = request.headers.get("x-ms-version")
    if version != documents.PROTOCOL_VERSION:
        request.violations.append(
            f"x-ms-version is {version!r}, expected {documents.PROTOCOL_VERSION!r}"
            if version is not None else f"x-ms-version header missing (expected {documents.PROTOCOL_VERSION})"
        )
    if not (request.headers.get("x-ms-agent-name") or "").strip():
        request.violations.append("x-ms-agent-name header missing or empty")


def _refused(request: Request) -> Optional[Reply]:
    if request.violations:
        return error(request.listener, 400, "; ".join(request.violations))
    return None


def goalstate(request: Request, served: Served) -> Reply:
    _wireserver_headers(request)
    role_instance = not (request.step and request.step.no_role_instance)
    return _refused(request) or Reply(
        200, documents.goal_state_xml(served.goal_state, served.wireserver_url, role_instance), XML)


def health(request: Request, served: Served) -> Reply:
    from azprov.health import parse_health_report

    violations = request.violations
    _wireserver_headers(request)
    content_type = request.headers.get("Content-Type") or ""
    if content_type.split(";", 1)[0].strip().lower() != "text/xml":
        violations.append(f"Content-Type is {content_type[:64]!r}, expected text/xml;charset=utf-8")
    report = None
    try:
        parsed = parse_health_report(request.body)
    except ProtocolError as exc:
        violations.append(str(exc)[:300])
    else:
        goal, sent = served.goal_state, parsed.goal_state
        if sent.incarnation != goal.incarnation:
            violations.append(f"GoalStateIncarnation {sent.incarnation} is not the served incarnation {goal.incarnation}")
        if sent.container_id != goal.container_id:
            violations.append(f"ContainerId {sent.container_id[:80]!r} is not the served {goal.container_id!r}")
        if sent.instance_id != goal.instance_id:
            violations.append(f"InstanceId {sent.instance_id[:80]!r} is not the served {goal.instance_id!r}")
        status = parsed.status
        report = {
            "state": status.state,
            "substatus": status.substatus.value if status.substatus else None,
            "description": status.description,
            "incarnation": sent.incarnation,
            "container_id": sent.container_id,
            "instance_id": sent.instance_id,
        }
    reply = _refused(request) or Reply(200, b"", XML)
    reply.report = report
    return reply


def provisioning_health(request: Request, served: Served) -> Reply:
    violations = request.violations
    report = None
    if not (request.headers.get("x-ms-guest-agent-name") or "").strip():
        violations.append("x-ms-guest-agent-name header missing or empty")
    content_type = request.headers.get("Content-Type") or ""
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        violations.append(f"Content-Type is {content_type[:64]!r}, expected application/json")
    try:
        document = json.loads(request.body.decode("utf-8"))
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
        report = {"state": state, "substatus": substatus,
                  "description": description if isinstance(description, str) else None}
    reply = _refused(request) or Reply(201, b"", JSON)
    reply.report = report
    return reply


def config(request: Request, served: Served) -> Reply:
    _wireserver_headers(request)
    refused = _refused(request)
    if refused is not None:
        return refused
    content = documents.config_xml(served.goal_state, request.params.get("type", ""),
                                   served.scenario.extensions)
    if content is None:
        return error(request.listener, 404, "no such configuration document")
    return Reply(200, content, XML)


def versions(request: Request, served: Served) -> Reply:
    return _refused(request) or Reply(200, documents.versions_xml(), XML)


# --- IMDS --------------------------------------------------------------------------------------

def _api_versions(served: Served) -> Tuple[str, ...]:
    return served.scenario.imds.api_versions or KNOWN_API_VERSIONS


def _imds_headers(request: Request) -> Optional[Reply]:
    """Metadata: true is required, and proxied requests are refused, as by the real IMDS."""
    if (request.headers.get("Metadata") or "").strip().lower() != "true":
        request.violations.append("Required metadata header not specified")
    if request.violations:
        return error("imds", 400, "Bad request. " + "; ".join(request.violations))
    return None


def imds(request: Request, served: Served) -> Reply:
    known = _api_versions(served)
    refused = _imds_headers(request)
    if refused is not None:
        return refused
    version = request.params.get("api-version")
    if version is None or version not in known:
        request.violations.append(f"api-version {version!r} is not known to this host" if version else
                                  "api-version missing")
        message = ("Bad request. api-version was not specified in the request. " if version is None
                   else "Bad request. api-version is invalid or was not specified in the request. ")
        return Reply(400, documents.error_json(message + "For more information refer to aka.ms/azureimds",
                                               **{"newest-versions": sorted(known, reverse=True)[:3]}), JSON)
    extended = request.params.get("extended", "").lower() == "true" and version >= EXTENDED_SINCE
    if served.scenario.imds.raw_body is not None:
        return Reply(200, served.scenario.imds.raw_body, JSON)
    document: Any = served.scenario.imds_document(extended)
    parts = [unquote(p) for p in request.path[len("/metadata/instance"):].split("/") if p]
    for part in parts:
        if isinstance(document, dict) and part in document:
            document = document[part]
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            return Reply(404, documents.error_json("Not found"), JSON)
    if request.params.get("format") == "text":
        if isinstance(document, (dict, list)):
            text = "\n".join(str(k) for k in (document if isinstance(document, dict) else range(len(document))))
        else:
            text = "" if document is None else str(document)
        return Reply(200, text.encode("utf-8"), "text/plain; charset=utf-8")
    return Reply(200, json.dumps(document).encode("utf-8"), JSON)


def imds_versions(request: Request, served: Served) -> Reply:
    refused = _imds_headers(request)
    if refused is not None:
        return refused
    return Reply(200, json.dumps({"apiVersions": list(_api_versions(served))}).encode(), JSON)


# --- routing -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    name: str  # the endpoint's name in the request log and in scenarios
    listener: str
    method: str
    matches: Callable[[str, Dict[str, str]], bool]  # (path, query) -> is it this endpoint
    answer: Callable[[Request, Served], Reply]


def _machine(comp: str) -> Callable[[str, Dict[str, str]], bool]:
    return lambda path, params: path in ("/machine", "/machine/") and params.get("comp", "") == comp


ROUTES: Tuple[Route, ...] = (
    Route("goalstate", "wireserver", "GET", _machine("goalstate"), goalstate),
    Route("health", "wireserver", "POST", _machine("health"), health),
    Route("provisioning_health", "wireserver", "POST",
          lambda path, params: path.rstrip("/") == "/provisioning/health", provisioning_health),
    Route("config", "wireserver", "GET",
          lambda path, params: path.startswith("/machine/") and params.get("comp", "") == "config", config),
    Route("versions", "wireserver", "GET",
          lambda path, params: path == "/" and params.get("comp", "") == "versions", versions),
    Route("imds", "imds", "GET",
          lambda path, params: path.rstrip("/") == "/metadata/instance" or path.startswith("/metadata/instance/"),
          imds),
    Route("imds_versions", "imds", "GET",
          lambda path, params: path.rstrip("/") == "/metadata/versions", imds_versions),
)
_BY_NAME = {route.name: route for route in ROUTES}


def classify(listener: str, path: str, params: Dict[str, str]) -> str:
    """The name of the endpoint a request is for, or ``other``."""
    for route in ROUTES:
        if route.listener == listener and route.matches(path, params):
            return route.name
    return "other"


def answer(endpoint: str, request: Request, served: Served) -> Reply:
    """The normal answer of ``endpoint`` (from :func:`classify`) to ``request``."""
    route = _BY_NAME.get(endpoint)
    if route is None:
        return error(request.listener, 404, f"nothing is served at {request.path[:200]}")
    if request.method != route.method:
        request.violations.append(f"{request.method} is not allowed here: {endpoint} takes {route.method}")
        reply = error(request.listener, 405, request.violations[-1])
        reply.headers.append(("Allow", route.method))
        return reply
    return route.answer(request, served)
