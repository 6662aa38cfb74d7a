from typing import Optional

import pytest
from hypothesis import example, given, strategies as st

from azprov.errors import DESCRIPTION_LIMIT, ProtocolError
from azprov.goalstate import GoalState
from azprov.health import (
    HEALTH_MAX_BYTES,
    HealthStatus,
    ParsedHealthReport,
    SubStatus,
    build_health_report,
    parse_health_report,
)
from support.strategies import (
    ANY_CHAR,
    ANY_TEXT,
    ID_TEXT,
    NASTY_CHAR,
    XML_ENCODINGS_ALL,
    XML_FRAGMENTS,
    check_goal_state,
    fuzz,
    is_xml_char,
    mutated,
    valid_goal_states,
    xml_documents,
    xml_trees,
)

GOAL = GoalState(7, "c-1", "i-1")


def test_ready_report_has_the_exact_element_order():
    body = build_health_report(GOAL, HealthStatus.ready_status()).decode()
    assert body.startswith('<?xml version="1.0" encoding="utf-8"?>\n<Health xmlns:xsi=')
    expected_order = ["<GoalStateIncarnation>7<", "<Container>", "<ContainerId>c-1<",
                      "<RoleInstanceList>", "<Role>", "<InstanceId>i-1<", "<Health>",
                      "<State>Ready</State>"]
    positions = [body.index(tag) for tag in expected_order]
    assert positions == sorted(positions)
    assert "<Details>" not in body


def test_failure_report_carries_substatus_and_escaped_description():
    text = "reason=<script>&\"quoted\"|x"
    body = build_health_report(GOAL, HealthStatus.failed(text))
    assert b"&lt;script&gt;&amp;" in body
    parsed = parse_health_report(body)
    assert parsed.goal_state == GOAL
    assert parsed.status == HealthStatus(False, SubStatus.PROVISIONING_FAILED, text)


def test_provisioning_substatus():
    parsed = parse_health_report(build_health_report(GOAL, HealthStatus.provisioning("booting")))
    assert parsed.status.substatus is SubStatus.PROVISIONING
    assert parsed.status.state == "NotReady"


def test_description_is_capped_and_stripped_of_characters_xml_cannot_carry():
    body = build_health_report(GOAL, HealthStatus.failed("\x00\x01bad" + "x" * 2000))
    description = parse_health_report(body).status.description
    assert len(description) == DESCRIPTION_LIMIT
    assert description.startswith("badxxx")


def test_ids_with_markup_are_escaped_not_injected():
    goal = GoalState(1, "</ContainerId><Evil/>", "i")
    parsed = parse_health_report(build_health_report(goal, HealthStatus.ready_status()))
    assert parsed.goal_state.container_id == "</ContainerId><Evil/>"


@pytest.mark.parametrize(
    "body",
    [
        b"<Health><Container/><GoalStateIncarnation>1</GoalStateIncarnation></Health>",
        b"<Health><GoalStateIncarnation>x</GoalStateIncarnation><Container><ContainerId>c"
        b"</ContainerId><RoleInstanceList><Role><InstanceId>i</InstanceId><Health><State>Ready"
        b"</State></Health></Role></RoleInstanceList></Container></Health>",
        b"<Health><GoalStateIncarnation>1</GoalStateIncarnation><Container><ContainerId>c"
        b"</ContainerId><RoleInstanceList><Role><InstanceId>i</InstanceId><Health><State>Ready"
        b"</State><Details><SubStatus>Provisioning</SubStatus></Details></Health></Role>"
        b"</RoleInstanceList></Container></Health>",
        b"not xml",
    ],
)
def test_parser_rejects_reports_out_of_shape(body):
    with pytest.raises(ProtocolError):
        parse_health_report(body)


# --------------------------------------------------------------------------------------------
# properties (hypothesis): strategies and conventions in support/strategies.py


GOAL_STATES = st.builds(
    GoalState,
    st.one_of(st.integers(0, 20), st.integers(0, 10**18), st.integers(0, 10**40)),
    ID_TEXT,
    ID_TEXT,
)

SHORT_GOAL_STATES = st.builds(
    GoalState, st.integers(0, 10**18), ID_TEXT.map(lambda s: s[:40]), ID_TEXT.map(lambda s: s[:40])
)

DESCRIPTIONS = st.one_of(
    st.none(),
    st.text(alphabet=st.one_of(ANY_CHAR, NASTY_CHAR), max_size=150),
    # over the 512 cap, with illegal characters spread over the whole length
    st.tuples(st.text(alphabet=st.one_of(ANY_CHAR, NASTY_CHAR), min_size=1, max_size=60),
              st.integers(8, 20)).map(lambda pair: pair[0] * pair[1]),
)

STATUSES = st.one_of(
    st.just(HealthStatus.ready_status()),
    st.builds(HealthStatus, st.just(False), st.sampled_from([None, *SubStatus]), DESCRIPTIONS),
)

SHORT_STATUSES = st.one_of(
    st.just(HealthStatus.ready_status()),
    st.builds(HealthStatus, st.just(False), st.sampled_from([None, *SubStatus]),
              st.one_of(st.none(), ANY_TEXT)),
)


def expected_description(text: Optional[str]) -> str:
    """What the fabric reads back: line ends normalised to LF (as XML parsers do anyway), then
    the characters XML cannot carry removed, cut at the limit."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    return "".join(char for char in text if is_xml_char(char))[:DESCRIPTION_LIMIT]


def check_health_round_trip(goal_state: GoalState, status: HealthStatus) -> None:
    body = build_health_report(goal_state, status)
    assert isinstance(body, bytes) and len(body) <= HEALTH_MAX_BYTES
    body.decode("utf-8")  # strict: no surrogates slipped through
    parsed = parse_health_report(body)
    assert parsed.goal_state == goal_state
    assert parsed.status.ready is status.ready
    assert parsed.status.state == status.state
    if status.ready:
        assert parsed.status == HealthStatus.ready_status()
    else:
        assert parsed.status.substatus is (status.substatus or SubStatus.PROVISIONING)
        assert parsed.status.description == expected_description(status.description)


@fuzz(250)
@example(GoalState(0, "<>&\"'", "]]>"), HealthStatus.failed("\ud800 lone \udfff surrogates\x00"))
@example(GoalState(10**18, "c", "i"), HealthStatus.failed("\U0001f600" * 600))
@example(GoalState(1, "c", "i"), HealthStatus(False, None, None))
@example(GoalState(1, "c", "i"), HealthStatus.failed("carriage\rreturn\r\n"))
@given(GOAL_STATES, STATUSES)
def test_health_report_round_trip(goal_state, status):
    check_health_round_trip(goal_state, status)


@fuzz(50)
@example(GoalState(1, "c", "i"), HealthStatus.failed("line one\r\nline two\r"))
@given(GOAL_STATES, STATUSES)
def test_health_report_round_trip_with_carriage_returns(goal_state, status):
    check_health_round_trip(goal_state, status)


def check_health_report(body: bytes) -> Optional[ParsedHealthReport]:
    try:
        parsed = parse_health_report(body)
    except ProtocolError:
        return None
    assert isinstance(parsed, ParsedHealthReport)
    assert isinstance(parsed.goal_state.incarnation, int)
    assert parsed.status.state in ("Ready", "NotReady")
    if parsed.status.description is not None:
        assert len(parsed.status.description) <= DESCRIPTION_LIMIT
    return parsed


@fuzz(400)
@example(b"")
@example(b"<Health/>")
@given(st.binary(max_size=2048))
def test_health_report_parse_any_bytes(body):
    check_health_report(body)


HEALTH_FRAGMENTS = [f.encode() for f in XML_FRAGMENTS] + [
    b"<Details/>", b"<State>Ready</State>", b"<State>NotReady</State>", b"<Role></Role>",
    b"</Health>", b"<Health>", b"<SubStatus>Bogus</SubStatus>", b"<Description/>",
]


@fuzz(150)
@example(b'<?xml version="1.0" encoding="utf-9"?><Health/>')
@given(st.one_of(
    st.tuples(SHORT_GOAL_STATES, SHORT_STATUSES).map(lambda pair: build_health_report(*pair)).flatmap(
        lambda body: mutated(body, HEALTH_FRAGMENTS)
    ),
    xml_documents(xml_trees(["Health"])),
))
def test_health_report_parse_mutated_and_random_documents(body):
    check_health_report(body)


@fuzz(100)
@example(b'<?xml version="1.0" encoding="base64"?><GoalState/>')
@given(st.one_of(
    xml_documents(xml_trees(["GoalState"]), encodings_=XML_ENCODINGS_ALL),
    xml_documents(xml_trees(["Health"]), encodings_=XML_ENCODINGS_ALL),
    valid_goal_states().flatmap(lambda pair: mutated(pair[1])),
    st.tuples(GOAL_STATES, STATUSES).flatmap(lambda pair: mutated(build_health_report(*pair))),
))
def test_xml_declared_encoding_any_codec_name(body):
    check_goal_state(body)
    check_health_report(body)
