"""The WireServer goal state: the three values a health report must echo.

The body is untrusted: it is parsed with defusedxml (no DTDs, entities or external references),
its size is capped, and only ``Incarnation``, ``Container/ContainerId`` and
``Container/RoleInstanceList/RoleInstance/InstanceId`` are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from azprov.errors import MissingRoleInstance, ProtocolError
from azprov.xmlparse import parse_untrusted_xml

GOAL_STATE_MAX_BYTES = 512 * 1024
ID_MAX_CHARS = 256
_ID_PATTERN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces


@dataclass(frozen=True)
class GoalState:
    incarnation: int
    container_id: str
    instance_id: str


def _required_text(root, path: str) -> str:
    element = root.find(path)
    text = (element.text or "").strip() if element is not None else ""
    if not text:
        raise ProtocolError(f"goal state has no {path}", element=path)
    return text


def _validated_id(value: str, name: str) -> str:
    if len(value) > ID_MAX_CHARS or not _ID_PATTERN.fullmatch(value):
        raise ProtocolError(
            f"goal state {name} is not a plausible identifier ({len(value)} characters)",
            element=name,
        )
    return value


def parse_goal_state(body: bytes) -> GoalState:
    """Parse a goal state document, or raise :class:`ProtocolError` saying what is wrong."""
    root = parse_untrusted_xml(body, "goal state", GOAL_STATE_MAX_BYTES, "GoalState")

    incarnation_text = _required_text(root, "Incarnation")
    if not incarnation_text.isascii() or not incarnation_text.isdigit() or len(incarnation_text) > 18:
        raise ProtocolError(
            f"goal state Incarnation is not a non-negative integer: {incarnation_text[:32]!r}"
        )
    container_id = _validated_id(_required_text(root, "Container/ContainerId"), "ContainerId")
    if root.find("Container/RoleInstanceList/RoleInstance") is None:
        raise MissingRoleInstance("goal state has no RoleInstance yet")
    instance_id = _validated_id(
        _required_text(root, "Container/RoleInstanceList/RoleInstance/InstanceId"), "InstanceId"
    )
    return GoalState(int(incarnation_text), container_id, instance_id)
