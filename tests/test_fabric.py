"""The fabric emulator, over real HTTP on 127.0.0.1: documents, validation, every scripted fault,
scenario files, the request log and the ``azprov fabric serve`` handler."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from azprov.errors import ConfigError, ProtocolError
from azprov.fabric import FabricEmulator, Scenario, ScenarioError, load_scenario
from azprov.fabric.cli import parse_listen
from azprov.fabric.instance import DEFAULT_PUBLIC_KEY
from azprov.goalstate import GOAL_STATE_MAX_BYTES, GoalState, MissingRoleInstance, parse_goal_state
from azprov.health import HealthStatus, build_health_report
from azprov.http import HttpClient, RetryPolicy
from azprov.imds import IMDS_MAX_BYTES, ImdsClient, parse_metadata
from azprov.wireserver import WireServerClient

SCENARIOS = Path(__file__).parent / "data" / "scenarios"
WS_HEADERS = {"x-ms-version": "2012-11-30", "x-ms-agent-name": "azprov-test"}
HEALTH_HEADERS = {**WS_HEADERS, "Content-Type": "text/xml;charset=utf-8"}
GOAL = "/machine/?comp=goalstate"
HEALTH = "/machine?comp=health"
INSTANCE = "/metadata/instance?api-version=2021-08-01&extended=true"


@contextlib.contextmanager
def emulator(scenario: dict | None = None, **kwargs):
    fabric = FabricEmulator(Scenario.from_dict(scenario or {}), wireserver=("127.0.0.1", 0),
                            imds=("127.0.0.1", 0), **kwargs)
    fabric.start()
    try:
        yield fabric
    finally:
        fabric.stop()


def call(url: str, path: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None,
         timeout: float = 10.0):
    """(status, headers, body) of one request on a fresh connection."""
    host, port = url[len("http://"):].rsplit(":", 1)
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def goal(fabric, **kwargs):
    return call(fabric.wireserver_url, GOAL, headers=WS_HEADERS, **kwargs)


def imds(fabric, path: str = INSTANCE, headers: dict | None = None):
    return call(fabric.imds_url, path, headers={"Metadata": "true"} if headers is None else headers)


def post_report(fabric, body: bytes, headers: dict | None = None):
    return call(fabric.wireserver_url, HEALTH, "POST", HEALTH_HEADERS if headers is None else headers, body)


def statuses(fabric, endpoint: str) -> list:
    return [r["status"] for r in fabric.requests if r["endpoint"] == endpoint]


def client(fabric, deadline: float = 10.0) -> WireServerClient:
    return WireServerClient(fabric.wireserver_url, HttpClient(), RetryPolicy(deadline=deadline))


# --- the documents --------------------------------------------------------------------------

def test_default_goal_state_is_realistic_and_parses():
    with emulator() as fabric:
        status, headers, body = goal(fabric)
        again = call(fabric.wireserver_url, "/machine?comp=goalstate", headers=WS_HEADERS)
    assert status == 200 and headers["Content-Type"].startswith("text/xml")
    parsed = parse_goal_state(body)
    assert parsed == fabric.goal_state
    assert parsed.incarnation == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", parsed.container_id)
    assert re.fullmatch(r"[0-9a-f-]{36}\._azprov-demo-vm", parsed.instance_id)
    text = body.decode()
    for element in ("<Version>2012-11-30</Version>", "<ExpectedState>Started</ExpectedState>",
                    "<State>Started</State>", "<HostingEnvironmentConfig>", "<SharedConfig>",
                    "<ExtensionsConfig>"):
        assert element in text
    assert again[0] == 200 and parse_goal_state(again[2]) == parsed


def test_configuration_urls_of_the_goal_state_are_served():
    with emulator() as fabric:
        body = goal(fabric)[2].decode()
        url = re.search(r"<ExtensionsConfig>([^<]+)</ExtensionsConfig>", body).group(1).replace("&amp;", "&")
        assert url.startswith(fabric.wireserver_url)
        status, _, config = call(fabric.wireserver_url, url[len(fabric.wireserver_url):], headers=WS_HEADERS)
    assert status == 200 and b"<Extensions" in config


def test_default_imds_document_parses_with_a_real_ed25519_key():
    with emulator() as fabric:
        status, headers, body = imds(fabric)
        old = imds(fabric, "/metadata/instance?api-version=2019-06-01")
        text = imds(fabric, "/metadata/instance/compute/osProfile/computerName?api-version=2021-08-01&format=text")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    metadata = parse_metadata(body)
    assert metadata.os_profile.computer_name == "azprov-demo" != metadata.name
    assert metadata.os_profile.admin_username == "azureuser"
    assert metadata.os_profile.disable_password_authentication is True
    assert metadata.pps_type == "None" and not metadata.is_pool_vm
    (key,) = metadata.public_keys
    assert key.key_data == DEFAULT_PUBLIC_KEY and key.path == "/home/azureuser/.ssh/authorized_keys"
    kind, blob, _ = key.key_data.split(" ", 2)
    raw = base64.b64decode(blob)
    assert kind == "ssh-ed25519" and raw[:15] == b"\x00\x00\x00\x0bssh-ed25519" and len(raw) == 51
    document = json.loads(body)
    assert document["compute"]["osType"] == "Linux" and document["network"]["interface"]
    assert document["compute"]["resourceId"].endswith("/virtualMachines/azprov-demo-vm")
    assert old[0] == 200 and "extended" not in json.loads(old[2])
    assert text[0] == 200 and text[2] == b"azprov-demo"


def test_identity_shortcuts_shape_both_endpoints():
    keys = ["ssh-ed25519 AAAA one", {"keyData": "ssh-rsa AAAA two\r\n", "path": "/srv/keys"}]
    scenario = {"incarnation": 7, "container_id": "c-7", "instance_id": "i-7._web", "vm_id": "v-7",
                "vm_name": "web_7", "computer_name": "web7", "admin_username": "ops", "public_keys": keys}
    with emulator(scenario) as fabric:
        served = parse_goal_state(goal(fabric)[2])
        metadata = parse_metadata(imds(fabric)[2])
    assert served == GoalState(7, "c-7", "i-7._web")
    assert (metadata.vm_id, metadata.name) == ("v-7", "web_7")
    assert (metadata.os_profile.computer_name, metadata.os_profile.admin_username) == ("web7", "ops")
    assert [(k.key_data, k.path) for k in metadata.public_keys] == [
        ("ssh-ed25519 AAAA one", "/home/ops/.ssh/authorized_keys"), ("ssh-rsa AAAA two\r\n", "/srv/keys")]


def test_identifiers_are_escaped_in_the_goal_state():
    with emulator({"container_id": "a&b<c>", "instance_id": "x\"y'z"}) as fabric:
        assert goal(fabric)[0] == 200
        parsed = parse_goal_state(goal(fabric)[2])
    assert (parsed.container_id, parsed.instance_id) == ("a&b<c>", "x\"y'z")


# --- IMDS validation and overrides ------------------------------------------------------------

def test_imds_requires_the_metadata_header_and_refuses_proxied_requests():
    with emulator() as fabric:
        missing = imds(fabric, headers={})
        proxied = imds(fabric, headers={"Metadata": "true", "X-Forwarded-For": "10.0.0.9"})
        no_version = imds(fabric, "/metadata/instance")
    assert missing[0] == 400 and "Required metadata header not specified" in json.loads(missing[2])["error"]
    assert proxied[0] == 400 and "X-Forwarded-For" in json.loads(proxied[2])["error"]
    assert no_version[0] == 400 and "api-version" in json.loads(no_version[2])["error"]
    records = [r for r in fabric.requests if r["endpoint"] == "imds"]
    assert all(r["violations"] for r in records)


def test_an_older_imds_host_answers_400_and_the_client_falls_back():
    with emulator({"imds": {"api_versions": ["2019-06-01"]}}) as fabric:
        status, _, body = imds(fabric)
        metadata = ImdsClient(fabric.imds_url, HttpClient(), RetryPolicy(deadline=10)).metadata()
    assert status == 400
    error = json.loads(body)
    assert error["error"].startswith("Bad request. api-version is invalid") and error["newest-versions"] == ["2019-06-01"]
    assert metadata.api_version == "2019-06-01" and metadata.pps_type is None
    assert statuses(fabric, "imds") == [400, 400, 200]


def test_imds_overrides_merge_replace_remove_and_raw_body():
    merged = {"imds": {"compute": {"osProfile": {"computerName": "merged"}, "tagsList": [{"name": "a"}]},
                       "extended": {"compute": {"ppsType": "PreprovisionedVM"}}}}
    with emulator(merged) as fabric:
        document = json.loads(imds(fabric)[2])
    assert document["compute"]["osProfile"] == {"adminUsername": "azureuser", "computerName": "merged",
                                                "disablePasswordAuthentication": "true"}
    assert document["compute"]["tagsList"] == [{"name": "a"}]
    assert parse_metadata(json.dumps(document).encode()).is_pool_vm

    with emulator({"imds": {"remove": ["compute.osProfile", "compute.publicKeys.0"]}}) as fabric:
        metadata = parse_metadata(imds(fabric)[2])
    assert metadata.os_profile is None and metadata.public_keys == ()

    with emulator({"imds": {"document": {"compute": {"vmId": "only"}}}}) as fabric:
        assert json.loads(imds(fabric)[2]) == {"compute": {"vmId": "only"}}

    with emulator({"imds": {"raw_body": '{"compute": {"vmId": '}}) as fabric:
        status, _, body = imds(fabric)
    assert status == 200 and body == b'{"compute": {"vmId": '
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_metadata(body)


def test_removing_a_path_that_is_not_there_is_an_error():
    with pytest.raises(ScenarioError, match="compute.osProfil"):
        Scenario.from_dict({"imds": {"remove": ["compute.osProfil"]}})


# --- health reports ---------------------------------------------------------------------------

def test_a_valid_report_is_accepted_and_recorded():
    with emulator({"incarnation": 4}) as fabric:
        served = fabric.goal_state
        failed = HealthStatus.failed("result=error|reason=disk <full>")
        status, _, body = post_report(fabric, build_health_report(served, failed))
        report = fabric.wait_for_report(timeout=5)
    assert status == 200 and body == b""
    assert report["state"] == "NotReady" and report["substatus"] == "ProvisioningFailed"
    assert report["description"] == "result=error|reason=disk <full>"
    assert (report["incarnation"], report["container_id"], report["instance_id"]) == (
        4, served.container_id, served.instance_id)
    assert report["valid"] is True
    (record,) = [r for r in fabric.requests if r["endpoint"] == "health"]
    assert record["report"]["state"] == "NotReady" and record["violations"] == []


@pytest.mark.parametrize("problem, expected", [
    ("incarnation", "GoalStateIncarnation 1 is not the served incarnation 2"),
    ("container", "ContainerId 'other' is not the served"),
    ("instance", "InstanceId 'other' is not the served"),
    ("order", "expected ['ContainerId', 'RoleInstanceList']"),
    ("agent-name", "x-ms-agent-name header missing"),
    ("version", "x-ms-version is '2015-04-05'"),
    ("content-type", "Content-Type is 'application/json'"),
    ("proxy", "Via header present"),
])
def test_invalid_reports_are_refused_with_violations(problem, expected):
    with emulator({"incarnation": 2}) as fabric:
        served = fabric.goal_state
        sent = GoalState(
            1 if problem == "incarnation" else served.incarnation,
            "other" if problem == "container" else served.container_id,
            "other" if problem == "instance" else served.instance_id,
        )
        body = build_health_report(sent, HealthStatus.ready_status())
        if problem == "order":
            body = re.sub(rb"(<ContainerId>.*?</ContainerId>)(<RoleInstanceList>.*</RoleInstanceList>)",
                          rb"\2\1", body)
        headers = dict(HEALTH_HEADERS)
        if problem == "agent-name":
            del headers["x-ms-agent-name"]
        if problem == "version":
            headers["x-ms-version"] = "2015-04-05"
        if problem == "content-type":
            headers["Content-Type"] = "application/json"
        if problem == "proxy":
            headers["Via"] = "1.1 squid"
        status, _, answer = post_report(fabric, body, headers)
    assert status == 400
    assert expected.encode() in answer
    (record,) = [r for r in fabric.requests if r["endpoint"] == "health"]
    assert any(expected in v for v in record["violations"]), record["violations"]
    assert fabric.reports == []


def test_a_goal_state_request_without_protocol_headers_is_refused():
    with emulator() as fabric:
        status, _, body = call(fabric.wireserver_url, GOAL)
    assert status == 400 and b"x-ms-version header missing" in body


def test_report_round_trip_with_azprovs_own_client():
    with emulator({"incarnation": 12}) as fabric:
        echoed = client(fabric).report(HealthStatus.ready_status())
        report = fabric.wait_for_report(timeout=5, state="Ready")
    assert echoed == fabric.goal_state and echoed.incarnation == 12
    assert report["incarnation"] == 12 and report["valid"]
    headers = [r["headers"] for r in fabric.requests]
    assert all(h["x-ms-version"] == "2012-11-30" and h["x-ms-agent-name"] for h in headers)


def test_wait_for_report_times_out_with_none():
    with emulator() as fabric:
        started = time.monotonic()
        assert fabric.wait_for_report(timeout=0.3) is None
    assert time.monotonic() - started < 2


def test_json_provisioning_health_endpoint():
    with emulator() as fabric:
        ok = call(fabric.wireserver_url, "/provisioning/health", "POST",
                  {"Content-Type": "application/json", "x-ms-guest-agent-name": "azprov"},
                  json.dumps({"state": "NotReady", "details": {"subStatus": "ProvisioningFailed",
                                                               "description": "no disk"}}).encode())
        bad = call(fabric.wireserver_url, "/provisioning/health", "POST", {}, b'{"state": "Fine"}')
        no_headers = call(fabric.wireserver_url, "/provisioning/health", "POST", {}, b'{"state": "Ready"}')
    assert ok[0] == 201 and bad[0] == 400 and no_headers[0] == 400
    assert fabric.provisioning_reports[0]["description"] == "no disk"
    violations = [r["violations"] for r in fabric.requests][2]
    assert "x-ms-guest-agent-name header missing or empty" in violations
    assert any("expected application/json" in v for v in violations)
    assert fabric.reports == []


# --- scripted faults --------------------------------------------------------------------------

def test_status_sequence_then_normal_behaviour():
    with emulator({"goalstate": [{"status": 500, "repeat": 2}, {"status": 503, "body": "busy"}]}) as fabric:
        answers = [goal(fabric) for _ in range(4)]
    assert [a[0] for a in answers] == [500, 500, 503, 200]
    assert answers[2][2] == b"busy"
    faults = [r["fault"] for r in fabric.requests]
    assert faults[0].startswith("goalstate[0] 1/2: status=500") and faults[1].startswith("goalstate[0] 2/2")
    assert faults[2].startswith("goalstate[1]: status=503") and faults[3] is None


def test_retry_after_and_extra_headers():
    with emulator({"goalstate": [{"status": 429, "retry_after": 3, "headers": {"X-Test": "yes"}}]}) as fabric:
        status, headers, _ = goal(fabric)
    assert status == 429 and headers["Retry-After"] == "3" and headers["X-Test"] == "yes"


def test_delay():
    with emulator({"imds": [{"delay": 0.5}]}) as fabric:
        started = time.monotonic()
        status, _, body = imds(fabric)
        elapsed = time.monotonic() - started
    assert status == 200 and parse_metadata(body) and elapsed >= 0.45


def test_drop_closes_without_an_answer():
    with emulator({"goalstate": [{"drop": True}]}) as fabric:
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            goal(fabric)
        assert goal(fabric)[0] == 200
    assert statuses(fabric, "goalstate") == [None, 200]
    assert fabric.stats()["by_status"]["dropped"] == 1


def test_truncate_promises_more_than_it_sends():
    with emulator({"goalstate": [{"truncate": True}, {"truncate": 10}]}) as fabric:
        for _ in range(2):
            with pytest.raises(http.client.IncompleteRead):
                goal(fabric)
        assert goal(fabric)[0] == 200
    sent = [r["bytes"] for r in fabric.requests]
    assert sent[1] == 10 and 0 < sent[0] < sent[2]


def test_trickle_sends_the_normal_body_slowly():
    with emulator({"goalstate": [{"trickle": 4000}]}) as fabric:
        started = time.monotonic()
        status, _, body = goal(fabric)
        elapsed = time.monotonic() - started
    assert status == 200 and parse_goal_state(body) == fabric.goal_state
    assert elapsed >= len(body) / 4000 * 0.7


def test_stop_is_prompt_with_a_trickling_response_in_flight():
    fabric = FabricEmulator(Scenario.from_dict({"goalstate": [{"trickle": 10}]}),
                            wireserver=("127.0.0.1", 0), imds=("127.0.0.1", 0))
    fabric.start()
    errors = []

    def slow_client():
        try:
            goal(fabric, timeout=30)
        except Exception as exc:  # noqa: BLE001 - the cut is what we expect
            errors.append(exc)

    reader = threading.Thread(target=slow_client, daemon=True)
    try:
        reader.start()
        for _ in range(100):
            if fabric.stats()["in_flight"]:
                break
            time.sleep(0.02)
        assert fabric.stats()["in_flight"] == 1
    finally:
        started = time.monotonic()
        fabric.stop()
        stopped_in = time.monotonic() - started
    reader.join(5)
    assert stopped_in < 3.0
    assert not reader.is_alive() and errors
    fabric.stop()  # a second stop is harmless


def test_oversize_stays_well_formed_but_too_big():
    size = GOAL_STATE_MAX_BYTES + 1
    with emulator({"goalstate": [{"oversize": size}], "imds": [{"oversize": IMDS_MAX_BYTES + 1}]}) as fabric:
        status, _, body = goal(fabric)
        imds_status, _, imds_body = imds(fabric)
    assert status == 200 and len(body) >= size
    with pytest.raises(ProtocolError, match="limit"):
        parse_goal_state(body)
    assert imds_status == 200 and len(imds_body) > IMDS_MAX_BYTES
    assert json.loads(imds_body)["compute"]


def test_no_role_instance_then_the_client_fetches_again():
    with emulator({"goalstate": [{"no_role_instance": True, "repeat": 2}]}) as fabric:
        with pytest.raises(MissingRoleInstance):
            parse_goal_state(goal(fabric)[2])
        served = client(fabric).goal_state()
    assert served == fabric.goal_state
    assert statuses(fabric, "goalstate") == [200, 200, 200]


def test_hostile_goal_state_files_are_served_raw_and_refused():
    for name in ("billion-laughs.toml", "external-entity.json"):
        fabric = FabricEmulator(load_scenario(SCENARIOS / name), wireserver=("127.0.0.1", 0), imds=None)
        with fabric:
            body = goal(fabric)[2]
            assert b"<!DOCTYPE" in body
            with pytest.raises(ProtocolError, match="hostile XML"):
                parse_goal_state(body)


def test_410_moves_the_goal_state_and_the_client_reports_for_the_new_one():
    scenario = {"incarnation": 3, "health": [{"status": 410, "new_incarnation": 5, "new_container_id": "c-5"}]}
    with emulator(scenario) as fabric:
        echoed = client(fabric).report(HealthStatus.ready_status())
        reports = fabric.reports
    assert statuses(fabric, "health") == [410, 200]
    assert echoed == fabric.goal_state == GoalState(5, "c-5", echoed.instance_id)
    assert [(r["incarnation"], r["container_id"]) for r in reports] == [(5, "c-5")]
    first = [r for r in fabric.requests if r["endpoint"] == "health"][0]
    assert first["report"]["incarnation"] == 3 and first["violations"] == []


def test_new_incarnation_true_bumps_by_one_and_move_goal_state():
    with emulator({"incarnation": 8, "goalstate": [{"new_incarnation": True}]}) as fabric:
        assert parse_goal_state(goal(fabric)[2]).incarnation == 9
        fabric.move_goal_state(instance_id="i-new")
        assert parse_goal_state(goal(fabric)[2]) == GoalState(10, fabric.goal_state.container_id, "i-new")


def test_refuse_for_refuses_connections_then_serves():
    with emulator({"wireserver": {"refuse_for": 1.0}}) as fabric:
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            goal(fabric)
        assert imds(fabric)[0] == 200  # only the WireServer listener is late
        for _ in range(100):
            try:
                status = goal(fabric)[0]
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        served_after = time.monotonic() - started
    assert status == 200 and served_after >= 0.9


def test_unavailable_for_answers_503_with_retry_after_then_serves():
    scenario = {"imds": {"unavailable_for": 0.6, "retry_after": "1"}, "goalstate": [{"status": 500}]}
    with emulator(scenario) as fabric:
        early, headers, _ = imds(fabric)
        goal_status = goal(fabric)[0]  # the WireServer is not affected, and its step is played
        time.sleep(0.7)
        late = imds(fabric)[0]
    assert (early, headers["Retry-After"], late, goal_status) == (503, "1", 200, 500)
    assert [r["fault"] for r in fabric.requests if r["endpoint"] == "imds"] == ["unavailable", None]


def test_rate_limit_answers_429_counts_them_and_tracks_concurrency():
    scenario = {"rate_limit": {"requests_per_second": 2, "burst": 3, "retry_after": "1"},
                "imds": [{"delay": 0.3, "repeat": 3}]}
    with emulator(scenario) as fabric:
        results = []
        threads = [threading.Thread(target=lambda: results.append(imds(fabric))) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        more = [goal(fabric) for _ in range(4)]
        stats = fabric.stats()
    assert [r[0] for r in results] == [200, 200, 200]
    throttled = [answer for answer in more if answer[0] == 429]
    assert throttled and all(answer[1]["Retry-After"] == "1" for answer in throttled)
    assert stats["throttled"] == len(throttled) == sum(1 for r in fabric.requests if r["fault"] == "throttled")
    assert stats["peak_concurrency"] >= 2
    assert stats["by_endpoint"] == {"imds": 3, "goalstate": 4} and stats["requests"] == 7


def test_absolute_form_request_target_is_a_proxy_violation():
    with emulator() as fabric:
        status = call(fabric.wireserver_url, f"{fabric.wireserver_url}{GOAL}", headers=WS_HEADERS)[0]
    assert status == 400
    assert "absolute form" in fabric.requests[0]["violations"][0]


def test_other_paths_and_methods():
    with emulator() as fabric:
        assert call(fabric.wireserver_url, "/nothing")[0] == 404
        assert call(fabric.wireserver_url, "/?comp=versions")[0] == 200
        assert call(fabric.wireserver_url, HEALTH, headers=WS_HEADERS)[0] == 405
        assert call(fabric.imds_url, "/metadata/versions", headers={"Metadata": "true"})[0] == 200
        assert imds(fabric, "/metadata/instance/compute/nope?api-version=2021-08-01")[0] == 404
    assert [r["endpoint"] for r in fabric.requests] == ["other", "versions", "health", "imds_versions", "imds"]


def test_chunked_request_body_is_read():
    with emulator() as fabric:
        body = build_health_report(fabric.goal_state, HealthStatus.ready_status())
        host, port = fabric.wireserver_url[7:].rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("POST", HEALTH, body=iter([body[:100], body[100:]]), headers=HEALTH_HEADERS,
                           encode_chunked=True)
        status = connection.getresponse().status
        connection.close()
    assert status == 200 and len(fabric.reports) == 1


def test_keep_alive_connection_serves_several_requests():
    with emulator() as fabric:
        host, port = fabric.wireserver_url[7:].rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            for _ in range(3):
                connection.request("GET", GOAL, headers=WS_HEADERS)
                response = connection.getresponse()
                assert response.status == 200 and response.read()
        finally:
            connection.close()
    assert len({r["client"] for r in fabric.requests}) == 1


def test_stop_before_start_and_start_twice():
    fabric = FabricEmulator(Scenario())
    fabric.stop()
    with pytest.raises(RuntimeError):
        fabric.start()
    with FabricEmulator(Scenario()) as running:
        with pytest.raises(RuntimeError):
            running.start()


def test_an_address_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fabric = FabricEmulator(Scenario(), wireserver=("127.0.0.1", port), imds=("127.0.0.1", 0))
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            fabric.start()


# --- scenarios --------------------------------------------------------------------------------

@pytest.mark.parametrize("data, named", [
    ({"goalstat": []}, "'goalstat' (did you mean 'goalstate'?)"),
    ({"goalstate": [{"stauts": 500}]}, "'goalstate[0].stauts' (did you mean 'status'?)"),
    ({"imds": {"refuse_fr": 1}}, "'imds.refuse_fr'"),
    ({"imds": {"steps": [{"no_role_instance": True}]}}, "'imds.steps[0].no_role_instance'"),
    ({"wireserver": {"delay": 1}}, "'wireserver.delay'"),
    ({"rate_limit": {"rps": 1}}, "'rate_limit.rps'"),
    ({"public_keys": [{"key": "x"}]}, "'public_keys[0].key'"),
])
def test_unknown_keys_are_errors_naming_the_key(data, named):
    with pytest.raises(ScenarioError, match=re.escape(named)):
        Scenario.from_dict(data)


@pytest.mark.parametrize("data, message", [
    ({"incarnation": "3"}, "incarnation must be an integer"),
    ({"goalstate": [{"status": "500"}]}, "goalstate[0].status must be an integer"),
    ({"goalstate": [{"status": 999}]}, "at most 599"),
    ({"goalstate": {"status": 500}}, "goalstate must be a list of steps"),
    ({"goalstate": [{"drop": True, "status": 500}]}, "cannot be combined with status"),
    ({"goalstate": [{"body": "x", "body_file": "y"}]}, "not both"),
    ({"goalstate": [{"body_file": "does-not-exist.xml"}]}, "cannot read"),
    ({"health": [{"delay": -1}]}, "at least 0"),
    ({"imds": {"document": {}, "compute": {}}}, "cannot be combined"),
    ({"rate_limit": {"burst": 2}}, "needs requests_per_second"),
])
def test_invalid_values_are_errors(data, message):
    with pytest.raises(ScenarioError, match=re.escape(message)):
        Scenario.from_dict(data)


def test_scenario_errors_are_config_errors_for_the_cli():
    assert issubclass(ScenarioError, ConfigError)


def test_json_and_toml_files_with_relative_body_files(tmp_path):
    (tmp_path / "hostile.xml").write_text("<GoalState/>")
    (tmp_path / "s.json").write_text(json.dumps({"goalstate": [{"body_file": "hostile.xml"}]}))
    (tmp_path / "s.toml").write_text('incarnation = 6\n[[goalstate]]\nbody_file = "hostile.xml"\nrepeat = 2\n')
    (tmp_path / "bad.toml").write_text("[[goalstate]]\nstatus = 500\nretry = 1\n")
    assert load_scenario(tmp_path / "s.json").steps_for("goalstate")[0].body == b"<GoalState/>"
    loaded = load_scenario(tmp_path / "s.toml")
    assert loaded.incarnation == 6 and loaded.steps_for("goalstate")[0].repeat == 2
    assert loaded.source == str(tmp_path / "s.toml")
    with pytest.raises(ScenarioError, match=r"bad\.toml.*'goalstate\[0\]\.retry'"):
        load_scenario(tmp_path / "bad.toml")
    with pytest.raises(ScenarioError, match="use .json or .toml"):
        load_scenario(tmp_path / "hostile.xml")


@pytest.mark.parametrize("path", sorted(p.name for p in SCENARIOS.iterdir() if p.suffix in (".json", ".toml")))
def test_shipped_scenarios_load(path):
    scenario = load_scenario(SCENARIOS / path)
    assert scenario.description


def test_shipped_scale_set_scenario_serves_its_identity():
    fabric = FabricEmulator(load_scenario(SCENARIOS / "scale-set-instance.toml"))
    with fabric:
        metadata = parse_metadata(imds(fabric)[2])
        served = parse_goal_state(goal(fabric)[2])
    assert (metadata.name, metadata.os_profile.computer_name) == ("web_2", "web000002")
    assert served.incarnation == 4 and served.instance_id.endswith("._web_2")
    assert metadata.public_keys[1].key_data.endswith("second\r\n")


# --- the request log --------------------------------------------------------------------------

def test_request_log_json_lines(tmp_path):
    log = tmp_path / "requests.jsonl"
    big = b"<Health>" + b"x" * 100_000 + b"</Health>"
    with emulator({"goalstate": [{"status": 500}]}, log_path=log) as fabric:
        goal(fabric)
        client(fabric).report(HealthStatus.failed("it broke"))
        post_report(fabric, big)
        imds(fabric, headers={"Metadata": "true", "x-ms-client-request-id": "r-1"})
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records == fabric.requests
    assert [r["endpoint"] for r in records] == ["goalstate", "goalstate", "health", "health", "imds"]
    first = records[0]
    for key in ("time", "t", "client", "endpoint", "method", "path", "headers", "status", "fault", "violations"):
        assert key in first
    assert first["status"] == 500 and first["fault"].startswith("goalstate[0]")
    assert re.match(r"\d{4}-\d\d-\d\dT", first["time"]) and first["client"].startswith("127.0.0.1:")
    assert records[2]["report"]["description"] == "it broke"
    assert records[3]["status"] == 400 and records[3]["violations"]
    assert records[4]["headers"]["x-ms-client-request-id"] == "r-1"
    assert len(log.read_bytes()) < 20_000  # the 100 kB body is not logged
    assert all(a["t"] <= b["t"] for a, b in zip(records, records[1:]))


def test_log_is_appended(tmp_path):
    log = tmp_path / "requests.jsonl"
    for _ in range(2):
        with emulator(log_path=log) as fabric:
            goal(fabric)
    assert len(log.read_text().splitlines()) == 2


def test_importing_the_emulator_does_not_import_requests():
    code = "import sys, azprov.fabric, azprov.fabric.cli; print('requests' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                            cwd=Path(__file__).parent.parent)
    assert result.stdout.strip() == "False", result.stderr


# --- azprov fabric serve ----------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("168.63.129.16:80", ("168.63.129.16", 80)),
    ("[::1]:8081", ("::1", 8081)),
    ("localhost:0", ("localhost", 0)),
    ("http://127.0.0.1:9/", ("127.0.0.1", 9)),
])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:http", ":80", "::1:80", "[::1]", "[nothost]:80",
                                  "127.0.0.1:70000", "[::1]80"])
def test_parse_listen_rejects(text):
    with pytest.raises(ConfigError):
        parse_listen(text, "--wireserver")


def _empty_config(tmp_path) -> str:
    config = tmp_path / "azprov.toml"
    config.write_text("")
    return str(config)


def _serve(tmp_path, *extra: str) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM")}
    return subprocess.Popen(
        [sys.executable, "-m", "azprov", "--config", _empty_config(tmp_path), "fabric", "serve",
         "--wireserver", "127.0.0.1:0", "--imds", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        cwd=Path(__file__).parent.parent,
    )


def _urls(process: subprocess.Popen) -> tuple:
    line = process.stderr.readline()
    found = re.search(r"WireServer on (http://\S+), IMDS on (http://\S+);", line)
    assert found, line
    return found.group(1), found.group(2)


def test_cli_serves_until_sigterm_and_logs_to_stdout(tmp_path):
    process = _serve(tmp_path)
    try:
        wireserver, imds_url = _urls(process)
        assert call(wireserver, GOAL, headers=WS_HEADERS)[0] == 200
        assert call(imds_url, INSTANCE, headers={"Metadata": "true"})[0] == 200
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [r["endpoint"] for r in records] == ["goalstate", "imds"]
    assert "stopped after 2 requests" in stderr


def test_cli_with_scenario_and_log_file_stops_on_sigint(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text("incarnation = 42\n[[goalstate]]\nstatus = 503\n")
    log = tmp_path / "log.jsonl"
    process = _serve(tmp_path, "--scenario", str(scenario), "--log", str(log))
    try:
        wireserver, _ = _urls(process)
        assert goal_status_and_incarnation(wireserver) == [503, 42]
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert stdout == ""
    assert [json.loads(line)["status"] for line in log.read_text().splitlines()] == [503, 200]


def goal_status_and_incarnation(wireserver: str) -> list:
    first = call(wireserver, GOAL, headers=WS_HEADERS)[0]
    return [first, parse_goal_state(call(wireserver, GOAL, headers=WS_HEADERS)[2]).incarnation]


def test_cli_reports_a_bad_scenario_as_a_configuration_error(tmp_path):
    scenario = tmp_path / "s.json"
    scenario.write_text('{"goalstate": [{"stauts": 500}]}')
    result = subprocess.run(
        [sys.executable, "-m", "azprov", "--config", _empty_config(tmp_path), "fabric", "serve", "--wireserver",
         "127.0.0.1:0", "--imds", "127.0.0.1:0", "--scenario", str(scenario)],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 3
    assert "'goalstate[0].stauts'" in result.stderr and "Traceback" not in result.stderr


def test_azprov_clients_get_through_a_flaky_fabric():
    scenario = {
        "incarnation": 2,
        "wireserver": {"unavailable_for": 0.5, "retry_after": "1"},
        "goalstate": [{"status": 500}, {"drop": True}, {"delay": 0.2}, {"no_role_instance": True}],
        "health": [{"status": 503}, {"status": 410, "new_incarnation": 3}],
        "imds": {"steps": [{"status": 400}], "api_versions": ["2019-06-01", "2021-08-01"]},
    }
    with emulator(scenario) as fabric:
        http = HttpClient()
        metadata = ImdsClient(fabric.imds_url, http, RetryPolicy(deadline=10)).metadata()
        echoed = WireServerClient(fabric.wireserver_url, http, RetryPolicy(deadline=20)).report(
            HealthStatus.ready_status())
        report = fabric.wait_for_report(timeout=1, state="Ready")
    assert metadata.api_version == "2019-06-01"
    assert echoed.incarnation == 3 and report["incarnation"] == 3 and report["valid"]
    assert statuses(fabric, "health")[-2:] == [410, 200]
    assert statuses(fabric, "goalstate")[0] == 503 and None in statuses(fabric, "goalstate")


def test_a_scenario_must_be_a_mapping():
    with pytest.raises(ScenarioError, match="top level"):
        Scenario.from_dict(["goalstate"])


def test_the_emulators_provisioning_disc_is_iso9660_that_7zip_and_azprov_read(tmp_path):
    """``azprov fabric disc``'s image: ovf-env.xml of the scenario, read by an independent
    reader (7-Zip) and by azprov's own, and the document in Azure's layout."""
    from azprov.fabric.disc import iso9660_image, ovf_env
    from azprov.fabric.scenario import Scenario
    from azprov.media import iso9660
    from azprov.media.image import Image
    from azprov.ovf import parse_ovf_env

    scenario = Scenario.from_dict({"computer_name": "pw-vm", "admin_username": "alice",
                                   "admin_password": "pa<ss>&'\"", "custom_data": "#!/bin/sh\n",
                                   "public_keys": ["ssh-ed25519 AAAA x"]})
    document = ovf_env(scenario)
    image = iso9660_image(document)
    path = tmp_path / "disc.iso"
    path.write_bytes(image)
    listing = subprocess.run(["7z", "e", "-so", str(path), "OVF-ENV.XML"], capture_output=True, check=True)
    assert listing.stdout == document
    assert iso9660.read_ovf_env(Image(image)) == document
    env = parse_ovf_env(document)
    assert (env.hostname, env.username, env.password, env.custom_data) == ("pw-vm", "alice", "pa<ss>&'\"", b"#!/bin/sh\n")
    assert env.disable_ssh_password_auth is False and tuple(key.value for key in env.keys if key.value) == ("ssh-ed25519 AAAA x",)
    assert b'xmlns="http://schemas.dmtf.org/ovf/environment/1"' in document and b"<wa:ProvisioningSection>" in document
