import json
import re
from typing import Dict, Optional, Tuple

import pytest
import responses
from hypothesis import assume, example, given, note, strategies as st

from azprov.errors import HttpStatusError, ProtocolError
from azprov.http import RetryPolicy
from azprov.imds import (
    IMDS_MAX_BYTES,
    MAX_PUBLIC_KEYS,
    ImdsClient,
    Metadata,
    OsProfile,
    PublicKey,
    parse_metadata,
)
from support.fakes import fake_http
from support.strategies import ANY_TEXT, KEY_TYPES, fuzz

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


# --------------------------------------------------------------------------------------------
# properties (hypothesis): strategies and conventions in support/strategies.py


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included: json.dumps writes NaN/Infinity
    ANY_TEXT,
    st.sampled_from(["", "true", "false", "None", " TRUE ", "\r\n"]),
)

IMDS_KEYS = [
    "compute", "vmId", "name", "osProfile", "computerName", "adminUsername",
    "disablePasswordAuthentication", "publicKeys", "keyData", "path", "extended", "ppsType",
]

JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(IMDS_KEYS), ANY_TEXT), children, max_size=5),
    ),
    max_leaves=30,
)


def check_metadata(body: bytes) -> Optional[Metadata]:
    try:
        metadata = parse_metadata(body)
    except ProtocolError:
        return None
    assert isinstance(metadata, Metadata)
    assert isinstance(metadata.vm_id, str) and isinstance(metadata.name, str)
    if metadata.os_profile is not None:
        assert isinstance(metadata.os_profile.computer_name, str)
        assert isinstance(metadata.os_profile.admin_username, str)
        assert isinstance(metadata.os_profile.disable_password_authentication, bool)
    assert isinstance(metadata.public_keys, tuple)
    for key in metadata.public_keys:
        assert isinstance(key.key_data, str) and isinstance(key.path, str)
    assert metadata.pps_type is None or isinstance(metadata.pps_type, str)
    assert isinstance(metadata.is_pool_vm, bool)
    return metadata


def json_bytes(value, ensure_ascii: bool = True) -> bytes:
    """JSON as IMDS sends it; lone surrogates are written as \\udXXXX escapes, as JSON allows."""
    try:
        return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True).encode("utf-8")


@fuzz(400)
@example(b"")
@example(b"\xef\xbb\xbf{}")
@example(b'{"compute": {"vmId": 1' + b"0" * 5000 + b"}}")  # over the int conversion limit
@example(b'{"compute": {"vmId": "\\ud800"}}')
@given(st.binary(max_size=1024))
def test_imds_any_bytes(body):
    check_metadata(body)


@fuzz(250)
@given(JSON_VALUES, st.booleans(), st.booleans())
def test_imds_any_json_value(value, wrap, ensure_ascii):
    if wrap:
        value = {"compute": value, "extended": value}
    try:
        body = json_bytes(value, ensure_ascii)
    except ValueError:  # an integer too long for json.dumps
        assume(False)
    check_metadata(body)


def _split_surrogate_pairs(text: str) -> str:
    """JSON reads the escapes of a high+low surrogate pair as one character: keep them apart."""
    return re.sub("([\ud800-\udbff])(?=[\udc00-\udfff])", "\\1.", text)


@st.composite
def imds_documents(draw) -> Tuple[dict, Metadata]:
    """A realistic instance document and the Metadata it must parse to."""
    text = st.one_of(ANY_TEXT.map(_split_surrogate_pairs),
                     st.from_regex(r"[a-z][a-z0-9-]{0,14}", fullmatch=True))
    vm_id = draw(st.one_of(st.uuids().map(str), text))
    compute: Dict[str, object] = {"vmId": vm_id}
    name = draw(st.one_of(st.none(), text))
    if name is not None:
        compute["name"] = name
    profile = None
    profile_kind = draw(st.sampled_from(["full", "full", "empty", "absent"]))
    if profile_kind == "full":
        flag = draw(st.sampled_from(["true", "false", "True", " FALSE ", True, False, None]))
        raw = {"computerName": draw(text), "adminUsername": draw(text)}
        if flag is not None:
            raw["disablePasswordAuthentication"] = flag
        compute["osProfile"] = raw
        if flag is None or isinstance(flag, bool):
            disable = flag is not False
        else:
            disable = flag.strip().lower() == "true"
        profile = OsProfile(raw["computerName"], raw["adminUsername"], disable)
    elif profile_kind == "empty":
        compute["osProfile"] = {}
    keys = []
    if draw(st.booleans()):
        raw_keys = []
        for _ in range(draw(st.integers(0, 4))):
            key_data = draw(st.one_of(
                text,
                st.builds(lambda kind, blob, end: f"{kind} {blob} user@host{end}",
                          st.sampled_from(KEY_TYPES),
                          st.from_regex(r"[A-Za-z0-9+/]{20,60}={0,2}", fullmatch=True),
                          st.sampled_from(["", "\n", "\r\n"])),
            ))
            path = draw(st.one_of(st.none(), text))
            raw_keys.append({"keyData": key_data} if path is None else {"keyData": key_data, "path": path})
            keys.append(PublicKey(key_data, path or ""))
        compute["publicKeys"] = raw_keys
    document: Dict[str, object] = {"compute": compute}
    pps = None
    if draw(st.booleans()):
        pps = draw(st.one_of(st.none(), st.sampled_from(["None", "PreprovisionedVM", ""]), text))
        document["extended"] = {"compute": {} if pps is None else {"ppsType": pps}}
    expected = Metadata(vm_id.strip(), name or "", profile, tuple(keys), pps)
    return document, expected


@fuzz(200)
@given(imds_documents(), st.booleans())
def test_imds_realistic_documents_round_trip(pair, ensure_ascii):
    document, expected = pair
    assert parse_metadata(json_bytes(document, ensure_ascii)) == expected


def _containers(value, path=()):
    """Paths of every dict and list inside a JSON value."""
    if isinstance(value, (dict, list)):
        yield path
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            yield from _containers(child, path + (key,))


@st.composite
def mutated_imds_documents(draw) -> dict:
    document, _ = draw(imds_documents())
    for _ in range(draw(st.integers(1, 5))):
        paths = list(_containers(document))
        path = draw(st.sampled_from(paths))
        target = document
        for step in path:
            target = target[step]
        keys = list(target.keys()) if isinstance(target, dict) else list(range(len(target)))
        action = draw(st.sampled_from(["drop", "replace", "replace", "add"]))
        if action == "drop" and keys:
            del target[draw(st.sampled_from(keys))]
        elif action == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
        elif action == "add" and isinstance(target, dict):
            target[draw(st.sampled_from(IMDS_KEYS))] = draw(JSON_VALUES)
        elif action == "add":
            target.append(draw(JSON_VALUES))
        elif not path and action != "add":  # emptied the whole document
            document = draw(JSON_VALUES)
            break
    return document


@fuzz(200)
@given(mutated_imds_documents(), st.booleans())
def test_imds_mutated_documents_parse_or_protocol_error(document, ensure_ascii):
    note(repr(document))
    try:
        body = json_bytes(document, ensure_ascii)
    except ValueError:
        assume(False)
    check_metadata(body)


@fuzz(100)
@given(st.integers(1, 400), st.sampled_from(["[", '{"compute":', '{"compute":{"osProfile":']))
def test_imds_moderately_nested_json(depth, opener):
    check_metadata(opener.encode() * depth)
    check_metadata(b"[" * depth + b"]" * depth)


@fuzz(30)
@example(100_000, "[")
@given(st.integers(1, 1_000_000), st.sampled_from(["[", '{"compute":', '{"a":[']))
def test_imds_deeply_nested_json(depth, opener):
    check_metadata(opener.encode() * depth)


def test_user_data_and_has_custom_data():
    doc = document(userData=" dXNlciBk\nYXRh ")
    doc["extended"]["compute"]["hasCustomData"] = True
    meta = parse_metadata(encode(doc))
    assert meta.user_data == b"user data" and meta.has_custom_data is True
    assert "user data" not in repr(meta) and "dXNlciBk" not in repr(meta)  # may be secret: out of repr
    plain = parse_metadata(encode(document(userData="")))
    assert plain.user_data is None and plain.has_custom_data is False
    with pytest.raises(ProtocolError, match="userData is not base64"):
        parse_metadata(encode(document(userData="%%%")))
