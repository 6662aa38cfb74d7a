import pytest

from azprov.errors import DESCRIPTION_LIMIT, ProtocolError
from azprov.goalstate import GoalState
from azprov.health import HealthStatus, SubStatus, build_health_report, parse_health_report

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
