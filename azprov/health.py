"""Health reports: the XML posted to ``/machine?comp=health``.

Built with ElementTree, never by string formatting, so every value is escaped; the element order
is the one the fabric expects (see docs/protocol.md).  ``parse_health_report`` reads one back: the
fabric emulator validates what a guest sends with it, and the tests check round trips.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from azprov.errors import DESCRIPTION_LIMIT, ProtocolError
from azprov.goalstate import GoalState
from azprov.xmlparse import parse_untrusted_xml

XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
HEALTH_MAX_BYTES = 64 * 1024


class SubStatus(str, enum.Enum):
    PROVISIONING = "Provisioning"
    PROVISIONING_FAILED = "ProvisioningFailed"


@dataclass(frozen=True)
class HealthStatus:
    """``Ready``, or ``NotReady`` with a sub-status and a description."""

    ready: bool
    substatus: Optional[SubStatus] = None
    description: Optional[str] = None

    @classmethod
    def ready_status(cls) -> "HealthStatus":
        return cls(ready=True)

    @classmethod
    def provisioning(cls, description: str = "") -> "HealthStatus":
        return cls(ready=False, substatus=SubStatus.PROVISIONING, description=description)

    @classmethod
    def failed(cls, description: str) -> "HealthStatus":
        return cls(ready=False, substatus=SubStatus.PROVISIONING_FAILED, description=description)

    @property
    def state(self) -> str:
        return "Ready" if self.ready else "NotReady"


def _xml_safe(text: str) -> str:
    """Drop characters XML 1.0 cannot carry at all (escaping cannot save them)."""
    return "".join(
        c
        for c in text
        if c in "\t\n\r"
        or "\x20" <= c <= "\ud7ff"
        or "\ue000" <= c <= "\ufffd"
        or "\U00010000" <= c <= "\U0010ffff"
    )


def build_health_report(goal_state: GoalState, status: HealthStatus) -> bytes:
    """The report body for ``status``, echoing ``goal_state``; the description is capped at 512."""
    from xml.etree.ElementTree import Element, SubElement, tostring

    def child(parent, tag: str, text: Optional[str] = None):
        element = SubElement(parent, tag)
        if text is not None:
            element.text = text
        return element

    health = Element("Health", {"xmlns:xsi": XSI, "xmlns:xsd": XSD})
    child(health, "GoalStateIncarnation", goal_state.echoed_incarnation)
    container = child(health, "Container")
    child(container, "ContainerId", goal_state.container_id)
    role = child(child(container, "RoleInstanceList"), "Role")
    child(role, "InstanceId", goal_state.instance_id)
    role_health = child(role, "Health")
    child(role_health, "State", status.state)
    if not status.ready:
        details = child(role_health, "Details")
        child(details, "SubStatus", (status.substatus or SubStatus.PROVISIONING).value)
        text = (status.description or "").replace("\r\n", "\n").replace("\r", "\n")
        description = _xml_safe(text)[:DESCRIPTION_LIMIT]
        child(details, "Description", description)
    body = tostring(health, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + body).encode("utf-8")


@dataclass(frozen=True)
class ParsedHealthReport:
    """A health report read back from XML (the emulator and the tests use it)."""

    goal_state: GoalState
    status: HealthStatus


_ORDER = {
    "Health": ["GoalStateIncarnation", "Container"],
    "Container": ["ContainerId", "RoleInstanceList"],
    "RoleInstanceList": ["Role"],
    "Role": ["InstanceId", "Health"],
}


def _children(element, expected: list, where: str) -> list:
    tags = [child.tag for child in element]
    if tags != expected:
        raise ProtocolError(f"health report: <{where}> holds {tags}, expected {expected}")
    return list(element)


def parse_health_report(body: bytes) -> ParsedHealthReport:
    """Read a health report strictly (element order included), or raise ProtocolError."""
    root = parse_untrusted_xml(body, "health report", HEALTH_MAX_BYTES, "Health")
    incarnation, container = _children(root, _ORDER["Health"], "Health")
    container_id, role_list = _children(container, _ORDER["Container"], "Container")
    (role,) = _children(role_list, _ORDER["RoleInstanceList"], "RoleInstanceList")
    instance_id, role_health = _children(role, _ORDER["Role"], "Role")
    tags = [child.tag for child in role_health]
    if tags not in (["State"], ["State", "Details"]):
        raise ProtocolError(f"health report: <Health> of the role holds {tags}")
    state = (role_health[0].text or "").strip()
    if state not in ("Ready", "NotReady") or (state == "Ready") != (tags == ["State"]):
        raise ProtocolError(f"health report: State {state!r} does not fit its details {tags}")
    text = (incarnation.text or "").strip()
    try:
        goal_state = GoalState(
            int(text),
            (container_id.text or "").strip(),
            (instance_id.text or "").strip(),
            text if text != str(int(text)) else "",
        )
    except ValueError:
        raise ProtocolError("health report: GoalStateIncarnation is not an integer") from None
    if state == "Ready":
        return ParsedHealthReport(goal_state, HealthStatus.ready_status())
    details = role_health[1]
    detail_tags = [child.tag for child in details]
    if detail_tags not in (["SubStatus"], ["SubStatus", "Description"]):
        raise ProtocolError(f"health report: <Details> holds {detail_tags}")
    try:
        substatus = SubStatus((details[0].text or "").strip())
    except ValueError:
        raise ProtocolError(f"health report: unknown SubStatus {details[0].text!r}") from None
    description = details[1].text or "" if len(details) > 1 else None
    if description is not None and len(description) > DESCRIPTION_LIMIT:
        raise ProtocolError(f"health report: Description is {len(description)} characters")
    return ParsedHealthReport(goal_state, HealthStatus(False, substatus, description))
