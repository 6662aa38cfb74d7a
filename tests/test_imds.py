import json

import pytest
import responses

from azprov.errors import HttpStatusError, ProtocolError
from azprov.http import RetryPolicy
from azprov.imds import IMDS_MAX_BYTES, MAX_PUBLIC_KEYS, ImdsClient, parse_metadata
from fakes import fake_http

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHZ0cCq0vEw3bS0w5k8dDk2S3JXq4zR0fU0h9yQ0w2lY user@host"


def document(**compute):
    base = {
        "vmId": "91267c52-9f02-4cfe-b1f4-a4da7ebac2cf",
        "name": "vmss_3",
        "osProfile": {"adminUsername": "azureuser", "computerName": "web-3",
                      "disablePasswordAuthentication": "true"},
        "publicKeys": [{"keyData": KEY + "\r\n", "path": "/home/azureuser/.ssh/authorized_keys"}],
    }
    base.update(compute)
    return {"compute": base, "extended": {"compute": {"ppsType": "None"}}}


def encode(doc) -> bytes:
    return json.dumps(doc).encode()


def test_instance_document_is_typed():
    meta = parse_metadata(encode(document()))
    assert meta.vm_id == "91267c52-9f02-4cfe-b1f4-a4da7ebac2cf"
    assert meta.os_profile.computer_name == "web-3"  # not compute.name
    assert meta.name == "vmss_3"
    assert meta.os_profile.disable_password_authentication is True
    assert meta.public_keys[0].key_data == KEY + "\r\n"  # CR/LF are the SSH step's business
    assert not meta.is_pool_vm


@pytest.mark.parametrize("flag, expected", [("false", False), ("True", True), (False, False), (True, True)])
def test_password_flag_as_string_or_bool(flag, expected):
    doc = document()
    doc["compute"]["osProfile"]["disablePasswordAuthentication"] = flag
    assert parse_metadata(encode(doc)).os_profile.disable_password_authentication is expected


def test_missing_os_profile_is_none_not_an_error():
    doc = document()
    del doc["compute"]["osProfile"]
    assert parse_metadata(encode(doc)).os_profile is None


def test_pool_vm_is_recognised():
    doc = document()
    doc["extended"]["compute"]["ppsType"] = "Running"
    assert parse_metadata(encode(doc)).is_pool_vm


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{", "not valid JSON"),
        (b"\xff", "not valid JSON"),
        (b"[]", "document is not an object"),
        (encode({"compute": {}}), "no compute.vmId"),
        (encode(document(vmId=5)), "compute.vmId is int"),
        (encode(document(publicKeys={})), "compute.publicKeys is dict"),
        (encode(document(publicKeys=[{"keyData": True}])), r"publicKeys\[0\].keyData is bool"),
        (encode(document(osProfile={"adminUsername": "a", "computerName": "b",
                                    "disablePasswordAuthentication": "maybe"})), "expected true or false"),
        (encode(document(publicKeys=[{"keyData": KEY}] * (MAX_PUBLIC_KEYS + 1))), "public keys, over"),
        (b" " * (IMDS_MAX_BYTES + 1), "bytes, over"),
    ],
)
def test_bad_documents_say_what_is_wrong(body, message):
    with pytest.raises(ProtocolError, match=message):
        parse_metadata(body)


IMDS = "http://imds.test"


@responses.activate
def test_client_sends_metadata_header_and_new_api_version():
    responses.add(responses.GET, f"{IMDS}/metadata/instance", json=document())
    client, _ = fake_http()
    meta = ImdsClient(IMDS, client, RetryPolicy(deadline=10)).metadata()
    request = responses.calls[0].request
    assert request.headers["Metadata"] == "true"
    assert "api-version=2021-08-01" in request.url and "extended=true" in request.url
    assert meta.api_version == "2021-08-01"


@responses.activate
def test_client_falls_back_to_2019_on_400():
    responses.add(responses.GET, f"{IMDS}/metadata/instance", status=400, json={"error": "api-version"})
    responses.add(responses.GET, f"{IMDS}/metadata/instance", json=document())
    client, _ = fake_http()
    meta = ImdsClient(IMDS, client, RetryPolicy(deadline=10)).metadata()
    assert "api-version=2019-06-01" in responses.calls[1].request.url
    assert "extended" not in responses.calls[1].request.url
    assert meta.api_version == "2019-06-01"


@responses.activate
def test_early_boot_404_is_retried_on_imds():
    responses.add(responses.GET, f"{IMDS}/metadata/instance", status=404)
    responses.add(responses.GET, f"{IMDS}/metadata/instance", status=410)
    responses.add(responses.GET, f"{IMDS}/metadata/instance", json=document())
    client, clock = fake_http()
    ImdsClient(IMDS, client, RetryPolicy(deadline=10, retry_not_found=True)).metadata()
    assert len(clock.sleeps) == 2


@responses.activate
def test_other_client_errors_are_not_retried():
    responses.add(responses.GET, f"{IMDS}/metadata/instance", status=403)
    client, _ = fake_http()
    with pytest.raises(HttpStatusError):
        ImdsClient(IMDS, client, RetryPolicy(deadline=10, retry_not_found=True)).metadata()
