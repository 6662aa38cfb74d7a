from pathlib import Path

import pytest
from hypothesis import example, given, note, strategies as st

from azprov.errors import ProtocolError
from azprov.goalstate import GOAL_STATE_MAX_BYTES, GoalState, MissingRoleInstance, parse_goal_state
from support.strategies import (
    XML_FRAGMENTS,
    check_goal_state,
    fuzz,
    mutated,
    near_goal_states,
    utf8,
    valid_goal_states,
    xml_documents,
    xml_trees,
)

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


# --------------------------------------------------------------------------------------------
# properties (hypothesis): strategies and conventions in support/strategies.py


@fuzz(400)
@example(b"")
@example(b"\x00" * 10)
@example(b"<GoalState/>")
@example(b"\xef\xbb\xbf<GoalState/>")
@example(b"\xff\xfe<\x00G\x00/\x00>\x00")
@given(st.binary(max_size=2048))
def test_goal_state_any_bytes_parse_or_protocol_error(body):
    check_goal_state(body)


@fuzz(80)
@example(b"<" * (GOAL_STATE_MAX_BYTES + 1))
@example(b"<GoalState>" + b"<a>" * 150_000)  # deep nesting, under the size cap
@given(st.integers(0, 5).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_goal_state_huge_or_deep_documents(body):
    check_goal_state(body)


@fuzz(150)
@example(utf8((Path(__file__).parent / "data" / "goalstates" / "goalstate.xml").read_text()))
@given(st.one_of(
    xml_documents(xml_trees(["GoalState"])),
    xml_documents(near_goal_states()),
))
def test_goal_state_random_xml_trees_parse_or_protocol_error(body):
    note(repr(body))
    check_goal_state(body)


@fuzz(150)
@example(b'<?xml version="1.0" encoding="utf-9"?><GoalState/>')
@given(valid_goal_states().flatmap(
    lambda pair: mutated(pair[1], [f.encode() for f in XML_FRAGMENTS])
))
def test_goal_state_mutated_valid_documents_parse_or_protocol_error(body):
    check_goal_state(body)


@fuzz(150)
@given(valid_goal_states())
def test_goal_state_valid_documents_round_trip(pair):
    expected, body = pair
    note(body.decode())
    assert parse_goal_state(body) == expected


@fuzz(50)
@given(valid_goal_states())
def test_goal_state_without_role_instance_is_the_transient_error(pair):
    _, body = pair
    text = body.decode()
    start = text.index("<RoleInstance>")
    end = text.index("</RoleInstance>") + len("</RoleInstance>")
    with pytest.raises(MissingRoleInstance):
        parse_goal_state((text[:start] + text[end:]).encode())


@pytest.mark.parametrize("text", ["007", "0", "00", "18446744073"])
def test_the_incarnation_is_echoed_exactly_as_sent(text):
    from azprov.health import HealthStatus, build_health_report, parse_health_report

    goal = parse_goal_state(gs(text))
    assert goal.incarnation == int(text) and goal.echoed_incarnation == text
    body = build_health_report(goal, HealthStatus.ready_status())
    assert f"<GoalStateIncarnation>{text}</GoalStateIncarnation>".encode() in body
    assert parse_health_report(body).goal_state.echoed_incarnation == text


@pytest.mark.parametrize("body, echoed", [
    (gs(incarnation="-1"), ("-1", "c-1", "i-1")),
    (gs(incarnation="one"), ("one", "c-1", "i-1")),
    (gs(incarnation="9" * 40), ("9" * 40, "c-1", "i-1")),
    (gs(container="a b"), ("1", "a b", "i-1")),
    (gs(instance="x" * 300), ("1", "c-1", "x" * 300)),
])
def test_a_refused_goal_state_that_can_be_echoed_carries_its_values(body, echoed):
    from azprov.errors import InvalidGoalState
    from azprov.health import HealthStatus, build_health_report

    with pytest.raises(InvalidGoalState) as caught:
        parse_goal_state(body)
    echo = caught.value.echo
    assert (echo.echoed_incarnation, echo.container_id, echo.instance_id) == echoed
    assert caught.value.reason == "invalid_goal_state"
    assert f"<GoalStateIncarnation>{echoed[0]}<".encode() in build_health_report(echo, HealthStatus.failed("x"))


@pytest.mark.parametrize("body", [gs(container=""), gs(instance=""), gs(instance="x" * 2000),
                                  gs(incarnation=""), b"<GoalState/>"])
def test_a_refused_goal_state_without_values_to_echo_is_a_plain_protocol_error(body):
    from azprov.errors import InvalidGoalState

    with pytest.raises(ProtocolError) as caught:
        parse_goal_state(body)
    assert not isinstance(caught.value, InvalidGoalState)
