import logging

import pytest
import requests
import responses

from azprov.errors import FabricUnreachable, HttpStatusError, ProtocolError
from azprov.http import RETRY_AFTER_MAX, Outcome, RetryPolicy, _retry_after, classify
from support.fakes import fake_http

URL = "http://wire.test/machine/?comp=goalstate"
POLICY = RetryPolicy(deadline=60, backoff_initial=0.5, backoff_max=3.0)


@pytest.mark.parametrize(
    "status, early_boot, outcome",
    [
        (200, False, Outcome.SUCCESS), (201, False, Outcome.SUCCESS),
        (408, False, Outcome.RETRY), (429, False, Outcome.RETRY),
        (500, False, Outcome.RETRY), (503, False, Outcome.RETRY), (599, False, Outcome.RETRY),
        (400, False, Outcome.FAIL), (403, False, Outcome.FAIL), (410, False, Outcome.FAIL),
        (404, False, Outcome.FAIL), (404, True, Outcome.RETRY), (410, True, Outcome.RETRY),
        (301, False, Outcome.FAIL),
    ],
)
def test_the_retry_table(status, early_boot, outcome):
    assert classify(status, retry_not_found=early_boot) is outcome


def test_backoff_is_capped_exponential_and_jittered():
    policy = RetryPolicy(deadline=1, backoff_initial=0.5, backoff_max=3.0)
    assert [policy.backoff(n, lambda: 1.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert policy.backoff(4, lambda: 0.25) == 0.75
    fixed = RetryPolicy(deadline=1, jitter=False)
    assert fixed.backoff(2, lambda: 0.0) == 1.0
    assert policy.backoff(10_000, lambda: 1.0) == 3.0  # no overflow


def test_retry_after_forms():
    assert _retry_after("7") == 7.0
    assert _retry_after("99999") == RETRY_AFTER_MAX
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0) == 10.0
    assert _retry_after("soon") is None
    assert _retry_after(None) is None


@responses.activate
def test_500_500_500_then_success_with_growing_waits(caplog):
    for _ in range(3):
        responses.add(responses.GET, URL, status=500)
    responses.add(responses.GET, URL, body=b"ok")
    client, clock = fake_http()
    with caplog.at_level(logging.INFO, logger="azprov.http"):
        response = client.request("GET", URL, policy=POLICY, what="goal state")
    assert response.body == b"ok"
    assert clock.sleeps == [0.5, 1.0, 2.0]
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 3 and "HTTP 500; retrying in 1.00 s" in failures[1]


@responses.activate
def test_a_deadline_ended_by_its_owner_stops_the_retries():
    """``Deadline.end()`` (the flow, giving up on IMDS for the disc): the attempt under way
    finishes, no new one starts."""
    client, clock = fake_http()
    deadline = client.deadline(POLICY)

    def refuse_and_end(request):
        deadline.end()  # ended while the second attempt is in flight
        return (500, {}, b"")

    responses.add(responses.GET, URL, status=500)
    responses.add_callback(responses.GET, URL, callback=refuse_and_end)
    responses.add(responses.GET, URL, body=b"never asked")
    with pytest.raises(FabricUnreachable, match="2 attempts"):
        client.request("GET", URL, policy=POLICY, what="IMDS", deadline=deadline)
    assert len(responses.calls) == 2 and deadline.remaining() == 0
    assert clock.sleeps == [0.5]


@responses.activate
def test_429_retry_after_is_honoured():
    responses.add(responses.GET, URL, status=429, headers={"Retry-After": "4"})
    responses.add(responses.GET, URL, body=b"ok")
    client, clock = fake_http(rng=lambda: 0.5)
    client.request("GET", URL, policy=POLICY, what="goal state")
    assert clock.sleeps == [4.25]  # Retry-After, plus the jittered backoff (0.5 s ceiling x 0.5)


@responses.activate
def test_retry_after_without_jitter_is_exact():
    responses.add(responses.GET, URL, status=429, headers={"Retry-After": "4"})
    responses.add(responses.GET, URL, body=b"ok")
    client, clock = fake_http()
    client.request("GET", URL, policy=RetryPolicy(deadline=60, jitter=False), what="goal state")
    assert clock.sleeps == [4.0]


@responses.activate
def test_non_retried_status_fails_at_once():
    responses.add(responses.GET, URL, status=403)
    client, clock = fake_http()
    with pytest.raises(HttpStatusError) as caught:
        client.request("GET", URL, policy=POLICY, what="goal state")
    assert caught.value.status == 403 and clock.sleeps == []
    assert len(responses.calls) == 1


@responses.activate
def test_fail_fast_returns_a_retryable_status_to_the_caller():
    responses.add(responses.POST, URL, status=503)
    client, _ = fake_http()
    with pytest.raises(HttpStatusError):
        client.request("POST", URL, policy=POLICY, what="x", fail_fast=frozenset({503}))


@responses.activate
def test_deadline_stops_retrying_and_says_why():
    responses.add(responses.GET, URL, body=requests.exceptions.ConnectionError("Connection refused"))
    client, clock = fake_http()
    policy = RetryPolicy(deadline=10, backoff_initial=0.5, backoff_max=3.0)
    with pytest.raises(FabricUnreachable) as caught:
        client.request("GET", URL, policy=policy, what="goal state")
    assert clock.now - 1000.0 <= 10.0
    assert "before the deadline (10 s" in str(caught.value)
    assert "connection refused" in str(caught.value)


@responses.activate
def test_timeouts_are_retried():
    responses.add(responses.GET, URL, body=requests.exceptions.ConnectTimeout())
    responses.add(responses.GET, URL, body=requests.exceptions.ReadTimeout())
    responses.add(responses.GET, URL, body=b"ok")
    client, clock = fake_http()
    assert client.request("GET", URL, policy=POLICY, what="x").body == b"ok"
    assert len(clock.sleeps) == 2


@responses.activate
def test_oversized_body_is_a_protocol_error():
    responses.add(responses.GET, URL, body=b"x" * 2048)
    client, _ = fake_http()
    with pytest.raises(ProtocolError, match="over the 1024-byte limit"):
        client.request("GET", URL, policy=POLICY, what="x", max_bytes=1024)


@responses.activate
def test_request_id_is_fresh_per_attempt():
    responses.add(responses.GET, URL, status=503)
    responses.add(responses.GET, URL, body=b"ok")
    client, _ = fake_http()
    client.request("GET", URL, policy=POLICY, what="x", request_id=True, headers={"Metadata": "true"})
    ids = [call.request.headers["x-ms-client-request-id"] for call in responses.calls]
    assert len(set(ids)) == 2
    assert all(call.request.headers["Metadata"] == "true" for call in responses.calls)


def test_proxy_environment_is_ignored(monkeypatch):
    from azprov.http import _new_session

    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    session = _new_session()
    assert session.trust_env is False
    settings = session.merge_environment_settings(URL, {}, None, None, None)
    assert settings["proxies"] == {}
