"""The WireServer goal state: the three values a health report must echo.

The body is untrusted: it is parsed with defusedxml (no DTDs, entities or external references),
its size is capped, and only ``Incarnation``, ``Container/ContainerId`` and
``Container/RoleInstanceList/RoleInstance/InstanceId`` are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from azprov.errors import InvalidGoalState, MissingRoleInstance, ProtocolError
from azprov.xmlparse import parse_untrusted_xml

GOAL_STATE_MAX_BYTES = 512 * 1024
ID_MAX_CHARS = 256
_ID_PATTERN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
ECHO_MAX_CHARS = 1024  # an odd value azprov still echoes in a failure report
_ECHOABLE = re.compile(r"[^\x00-\x1f\x7f]{1,%d}" % ECHO_MAX_CHARS)


@dataclass(frozen=True)
class GoalState:
    """The goal state fields a health report echoes."""

    incarnation: int
    container_id: str
    instance_id: str
    # The Incarnation exactly as sent ("007"), echoed in health reports as WALinuxAgent does;
    # empty when it is the plain number.  Not part of equality: 007 and 7 are one incarnation.
    incarnation_text: str = field(default="", compare=False)
    # The RoleInstance's Configuration/ExtensionsConfig URL (what VM extensions the platform
    # asks for: azprov.extensions), None when absent or not an http URL.  Not part of equality.
    extensions_config: Optional[str] = field(default=None, compare=False)

    @property
    def echoed_incarnation(self) -> str:
        """The GoalStateIncarnation a health report must carry: the text the fabric sent."""
        return self.incarnation_text or str(self.incarnation)


def _required_text(root, path: str) -> str:
    text = _text(root, path)
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


def _text(root, path: str) -> str:
    element = root.find(path)
    return (element.text or "").strip() if element is not None else ""


def echo_of(root) -> Optional[GoalState]:
    """The goal state to report a refusal for: its three values as sent, when they are all
    there and a report can carry them; else None (nobody to report to)."""
    incarnation = _text(root, "Incarnation")
    container_id = _text(root, "Container/ContainerId")
    instance_id = _text(root, "Container/RoleInstanceList/RoleInstance/InstanceId")
    if not all(_ECHOABLE.fullmatch(value) for value in (incarnation, container_id, instance_id)):
        return None
    number = int(incarnation) if incarnation.isascii() and incarnation.isdigit() else 0
    return GoalState(number, container_id, instance_id, incarnation)


def parse_goal_state(body: bytes) -> GoalState:
    """Parse a goal state document, or raise :class:`ProtocolError` saying what is wrong
    (:class:`InvalidGoalState` when the refused goal state can still be reported to)."""
    root = parse_untrusted_xml(body, "goal state", GOAL_STATE_MAX_BYTES, "GoalState")
    try:
        return _goal_state(root)
    except MissingRoleInstance:
        raise
    except ProtocolError as exc:
        echo = echo_of(root)
        if echo is None:
            raise
        raise InvalidGoalState(exc.message, echo=echo, **exc.details) from None


def _goal_state(root) -> GoalState:
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
    number = int(incarnation_text)
    return GoalState(number, container_id, instance_id,
                     incarnation_text if incarnation_text != str(number) else "",
                     _extensions_config(root))


EXTENSIONS_CONFIG_PATH = "Container/RoleInstanceList/RoleInstance/Configuration/ExtensionsConfig"


def _extensions_config(root) -> Optional[str]:
    """The ExtensionsConfig URL, only an http(s) URL of printable ASCII up to 2048 characters."""
    text = (root.findtext(EXTENSIONS_CONFIG_PATH) or "").strip()
    if (text.startswith(("http://", "https://")) and len(text) <= 2048 and text.isascii()
            and text.isprintable() and " " not in text):
        return text
    return None
