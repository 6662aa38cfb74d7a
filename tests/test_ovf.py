"""ovf-env.xml parsing (azprov.ovf): Azure's layout, other prefixes, hostile documents, redaction,
and fuzzing (any input gives an OvfEnv or ProtocolError)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azprov.errors import ProtocolError
from azprov.ovf import OVF_NS, REDACTED, WA_NS, parse_ovf_env, redacted
from support import discs

SCALE = int(os.environ.get("AZPROV_FUZZ_SCALE", "1"))
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkx alice@laptop"


def test_azure_layout_default_namespace_plus_wa_prefix():
    env = parse_ovf_env(discs.ovf_env(keys=(("F00D", KEY), ("BEEF", None))))
    assert (env.hostname, env.username, env.password) == ("vm-from-disc", "azureuser", "Disc-Passw0rd!")
    assert env.disable_ssh_password_auth is False
    assert env.custom_data == b"#!/bin/sh\necho hello\n"
    assert tuple(key.value for key in env.keys if key.value) == (KEY,)
    assert [k.fingerprint for k in env.fingerprint_only_keys] == ["BEEF"]
    assert env.preprovisioned_vm is False
    assert "Passw0rd" not in repr(env) and "echo hello" not in repr(env)
    assert env.summary()["password"] == "(set, redacted)"


def test_matched_by_namespace_uri_not_prefix():
    body = (f'<x:Environment xmlns:x="{OVF_NS}" xmlns:az="{WA_NS}"><az:ProvisioningSection>'
            "<az:LinuxProvisioningConfigurationSet><az:HostName>h</az:HostName>"
            "<az:UserName>u</az:UserName><az:UserPassword>p w</az:UserPassword>"
            "<az:CustomData>\n  aGVs\n  bG8=\n</az:CustomData></az:LinuxProvisioningConfigurationSet>"
            "</az:ProvisioningSection><az:PlatformSettingsSection><az:PlatformSettings>"
            "<az:PreprovisionedVm>true</az:PreprovisionedVm>"
            "<az:PreprovisionedVMType>Savable</az:PreprovisionedVMType>"
            "<az:ProvisionGuestProxyAgent>true</az:ProvisionGuestProxyAgent>"
            "</az:PlatformSettings></az:PlatformSettingsSection></x:Environment>").encode()
    env = parse_ovf_env(body)
    assert (env.hostname, env.username, env.password, env.custom_data) == ("h", "u", "p w", b"hello")
    assert (env.preprovisioned_vm, env.preprovisioned_vm_type, env.provision_guest_proxy_agent) == \
        (True, "Savable", True)


def test_the_right_prefix_on_the_wrong_namespace_is_not_read():
    body = discs.ovf_env().replace(WA_NS.encode(), b"http://example.com/not-azure")
    with pytest.raises(ProtocolError, match="no LinuxProvisioningConfigurationSet"):
        parse_ovf_env(body)
    with pytest.raises(ProtocolError, match="root element"):
        parse_ovf_env(discs.ovf_env().replace(OVF_NS.encode(), b"urn:other", 1))


@pytest.mark.parametrize("body,match", [
    (discs.ovf_env(custom_data="not*base64"), "not base64"),
    (discs.ovf_env(disable_password_auth="maybe"), "not true or false"),
    (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><Environment/>', "hostile"),
    (b"<Environment", "not well-formed"),
    (b" " * (1024 * 1024 + 1), "limit"),
])
def test_bad_documents_are_protocol_errors(body, match):
    with pytest.raises(ProtocolError, match=match):
        parse_ovf_env(body)


def test_no_password_and_no_custom_data_are_none():
    env = parse_ovf_env(discs.ovf_env(password="", custom_data=""))
    assert env.password is None and env.custom_data is None


def test_redacted_copy_has_no_password_and_still_parses():
    body = discs.ovf_env()
    copy = redacted(body)
    assert b"Disc-Passw0rd!" not in copy
    again = parse_ovf_env(copy)
    assert again.password == REDACTED and again.hostname == "vm-from-disc"
    assert again.custom_data == parse_ovf_env(body).custom_data


_FRAGMENTS = ["<HostName>h</HostName>", "<UserPassword>x</UserPassword>", "<CustomData>%%</CustomData>",
              "<SSH><PublicKeys><PublicKey><Value>v</Value></PublicKey></PublicKeys></SSH>",
              "<DisableSshPasswordAuthentication>true</DisableSshPasswordAuthentication>",
              "<CustomData>aGk=</CustomData>", "&amp;", "<![CDATA[x]]>", "<a:b xmlns:a='urn:x'/>", "\x00"]


@settings(max_examples=300 * SCALE, deadline=1000, database=None)
@given(st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=20), max_size=12))
def test_fuzz_structured_documents(parts):
    body = (f'<Environment xmlns="{OVF_NS}" xmlns:wa="{WA_NS}"><wa:ProvisioningSection>'
            f'<LinuxProvisioningConfigurationSet xmlns="{WA_NS}">{"".join(parts)}'
            "</LinuxProvisioningConfigurationSet></wa:ProvisioningSection></Environment>").encode(
                "utf-8", "surrogatepass")
    try:
        parse_ovf_env(body)
    except ProtocolError:
        pass


@settings(max_examples=300 * SCALE, deadline=1000, database=None)
@given(st.binary(max_size=2048), st.integers(0, 1400))
def test_fuzz_mutated_azure_document(blob, at):
    real = discs.ovf_env(keys=(("F", KEY),))
    body = real[:at] + blob + real[at + len(blob) // 2:]
    try:
        env = parse_ovf_env(body)
    except ProtocolError:
        return
    assert env.custom_data is None or len(env.custom_data) <= 256 * 1024
