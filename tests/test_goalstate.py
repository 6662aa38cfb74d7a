from pathlib import Path

import pytest

from azprov.errors import ProtocolError
from azprov.goalstate import GOAL_STATE_MAX_BYTES, GoalState, MissingRoleInstance, parse_goal_state

DATA = Path(__file__).parent / "data" / "goalstates"


def gs(incarnation="1", container="c-1", instance="i-1") -> bytes:
    return (
        f"<GoalState><Incarnation>{incarnation}</Incarnation><Container><ContainerId>{container}"
        f"</ContainerId><RoleInstanceList><RoleInstance><InstanceId>{instance}</InstanceId>"
        "</RoleInstance></RoleInstanceList></Container></GoalState>"
    ).encode()


def test_real_goal_state_is_parsed():
    assert parse_goal_state((DATA / "goalstate.xml").read_bytes()) == GoalState(
        3, "7b324f53-983a-43bc-b919-1775d6077608", "fbb84507-46cd-4f4e-bd78-a2edaa9d059b._vm1"
    )


def test_whitespace_is_stripped():
    assert parse_goal_state(gs(" 12\n", "\n c \n", "\ti\t")) == GoalState(12, "c", "i")


@pytest.mark.parametrize("name", ["billion-laughs.xml", "external-entity.xml"])
def test_hostile_xml_is_refused_with_a_clear_error(name):
    with pytest.raises(ProtocolError, match="hostile XML"):
        parse_goal_state((DATA / name).read_bytes())


def test_missing_role_instance_is_its_own_error():
    with pytest.raises(MissingRoleInstance):
        parse_goal_state((DATA / "no-role-instance.xml").read_bytes())


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "not well-formed"),
        (b"<GoalState>", "not well-formed"),
        (b"<Other/>", "expected <GoalState>"),
        (gs(incarnation="-1"), "non-negative integer"),
        (gs(incarnation="one"), "non-negative integer"),
        (gs(incarnation="9" * 40), "non-negative integer"),
        (gs(container=""), "no Container/ContainerId"),
        (gs(container="a b"), "plausible identifier"),
        (gs(instance="x" * 300), "plausible identifier"),
        (gs(instance=""), "no Container/RoleInstanceList/RoleInstance/InstanceId"),
    ],
)
def test_invalid_goal_states_say_what_is_wrong(body, message):
    with pytest.raises(ProtocolError, match=message):
        parse_goal_state(body)


def test_oversized_body_is_refused_before_parsing():
    body = gs() + b" " * GOAL_STATE_MAX_BYTES
    with pytest.raises(ProtocolError, match="over the"):
        parse_goal_state(body)
