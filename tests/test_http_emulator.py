"""The HTTP policy against faults a mock cannot play: real sockets, the fabric emulator."""

import time

import pytest

from azprov.errors import FabricUnreachable, ProtocolError
from azprov.fabric import FabricEmulator, Scenario
from azprov.http import HttpClient, RetryPolicy
from azprov.wireserver import WireServerClient

pytestmark = pytest.mark.emulator


def wireserver(fabric, **policy):
    return WireServerClient(fabric.wireserver_url, HttpClient(), RetryPolicy(**{"deadline": 20, **policy}))


def goalstate_statuses(fabric):
    return [r["status"] for r in fabric.requests if r["endpoint"] == "goalstate"]


def run(scenario):
    return FabricEmulator(Scenario.from_dict(scenario), wireserver=("127.0.0.1", 0), imds=None)


def test_a_truncated_body_is_retried_not_parsed():
    with run({"incarnation": 4, "goalstate": [{"truncate": True}]}) as fabric:
        assert wireserver(fabric).goal_state().incarnation == 4
        assert len(goalstate_statuses(fabric)) == 2


def test_a_trickling_server_cannot_outlast_the_deadline():
    with run({"goalstate": [{"trickle": 20, "repeat": 50}]}) as fabric:
        started = time.monotonic()
        with pytest.raises(FabricUnreachable, match="too slow"):
            wireserver(fabric, deadline=3, attempt_timeout=1.5).goal_state()
        assert time.monotonic() - started < 4.0


def test_a_lower_case_retry_after_header_is_honoured():
    with run({"goalstate": [{"status": 503, "headers": {"retry-after": "2"}}]}) as fabric:
        started = time.monotonic()
        wireserver(fabric).goal_state()
        assert time.monotonic() - started >= 1.9


def test_a_dropped_connection_is_retried():
    with run({"goalstate": [{"drop": True, "repeat": 2}]}) as fabric:
        wireserver(fabric).goal_state()
        assert goalstate_statuses(fabric) == [None, None, 200]


def test_an_oversized_goal_state_is_refused_at_once():
    with run({"goalstate": [{"oversize": 10 * 1024 * 1024, "repeat": 5}]}) as fabric:
        with pytest.raises(ProtocolError, match="over the 524288-byte limit"):
            wireserver(fabric).goal_state()
        assert len(goalstate_statuses(fabric)) == 1
