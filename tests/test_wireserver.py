import pytest
import responses

from azprov.errors import FabricUnreachable, HttpStatusError, ProtocolError
from azprov.goalstate import GoalState
from azprov.health import HealthStatus, parse_health_report
from azprov.http import RetryPolicy
from azprov.wireserver import GONE_ATTEMPTS, ROLE_INSTANCE_ATTEMPTS, WireServerClient
from support.fakes import fake_http

WS = "http://wire.test"
GS_URL = f"{WS}/machine/?comp=goalstate"
HEALTH_URL = f"{WS}/machine?comp=health"


def gs(incarnation=1, container="c-1", instance="i-1", role=True) -> bytes:
    role_xml = f"<RoleInstance><InstanceId>{instance}</InstanceId></RoleInstance>" if role else ""
    return (f"<GoalState><Incarnation>{incarnation}</Incarnation><Container><ContainerId>{container}"
            f"</ContainerId><RoleInstanceList>{role_xml}</RoleInstanceList></Container></GoalState>").encode()


def client():
    http, clock = fake_http()
    return WireServerClient(WS, http, RetryPolicy(deadline=60)), clock


def posted_reports():
    return [parse_health_report(call.request.body) for call in responses.calls if call.request.method == "POST"]


@responses.activate
def test_report_echoes_the_goal_state_fetched_for_it():
    responses.add(responses.GET, GS_URL, body=gs(incarnation=42))
    responses.add(responses.POST, HEALTH_URL, status=200)
    wire, _ = client()
    assert wire.report(HealthStatus.ready_status()) == GoalState(42, "c-1", "i-1")
    (report,) = posted_reports()
    assert report.goal_state.incarnation == 42
    post = responses.calls[1].request
    assert post.headers["x-ms-version"] == "2012-11-30"
    assert post.headers["x-ms-agent-name"] == "azprov"
    assert post.headers["Content-Type"] == "text/xml;charset=utf-8"


@responses.activate
def test_410_fetches_a_new_goal_state_and_rebuilds_the_report():
    responses.add(responses.GET, GS_URL, body=gs(incarnation=1))
    responses.add(responses.POST, HEALTH_URL, status=410)
    responses.add(responses.GET, GS_URL, body=gs(incarnation=2, container="c-2"))
    responses.add(responses.POST, HEALTH_URL, status=200)
    wire, _ = client()
    assert wire.report(HealthStatus.ready_status()).incarnation == 2
    assert [r.goal_state.incarnation for r in posted_reports()] == [1, 2]
    assert posted_reports()[1].goal_state.container_id == "c-2"


@responses.activate
def test_endless_410_gives_up_with_a_clear_error():
    responses.add(responses.GET, GS_URL, body=gs())
    responses.add(responses.POST, HEALTH_URL, status=410)
    wire, _ = client()
    with pytest.raises(FabricUnreachable, match="410 Gone"):
        wire.report(HealthStatus.ready_status())
    assert len(posted_reports()) == GONE_ATTEMPTS


@responses.activate
def test_missing_role_instance_is_fetched_again():
    responses.add(responses.GET, GS_URL, body=gs(role=False))
    responses.add(responses.GET, GS_URL, body=gs(role=False))
    responses.add(responses.GET, GS_URL, body=gs(instance="i-late"))
    wire, clock = client()
    assert wire.goal_state().instance_id == "i-late"
    assert clock.sleeps == [0.5, 0.5]


@responses.activate
def test_missing_role_instance_for_good_fails():
    responses.add(responses.GET, GS_URL, body=gs(role=False))
    wire, _ = client()
    with pytest.raises(ProtocolError, match=f"after {ROLE_INSTANCE_ATTEMPTS} fetches"):
        wire.goal_state()


@responses.activate
def test_health_rejection_other_than_410_is_reported():
    responses.add(responses.GET, GS_URL, body=gs())
    responses.add(responses.POST, HEALTH_URL, status=400)
    wire, _ = client()
    with pytest.raises(HttpStatusError) as caught:
        wire.report(HealthStatus.failed("x"))
    assert caught.value.status == 400
