"""Which source wins (azprov.sources): IMDS and the provisioning disc combined."""

from __future__ import annotations

import logging

import pytest

from azprov.errors import IncompleteDisc
from azprov.ovf import OvfEnv, OvfKey
from azprov.sources import combine, from_disc
from support.fakes import ED25519, VM_ID, metadata

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther other@host"


def disc(**values) -> OvfEnv:
    base = dict(hostname="disc-host", username="discuser", password="pw", disable_ssh_password_auth=False,
                keys=(OvfKey("/home/discuser/.ssh/authorized_keys", ED25519, "FP1"),),
                custom_data=b"data")
    base.update(values)
    return OvfEnv(**base)


def test_no_disc_leaves_imds_as_it_is():
    imds = metadata()
    assert combine(imds, None) is imds


def test_imds_wins_and_the_disc_adds_password_and_custom_data(caplog):
    imds = metadata(computer_name="imds-host", admin_username="azureuser")
    with caplog.at_level(logging.WARNING):
        combined = combine(imds, disc(keys=(OvfKey(None, OTHER_KEY, None), OvfKey(None, None, "ABCD"))))
    assert combined.os_profile == imds.os_profile and combined.public_keys == imds.public_keys
    assert (combined.password, combined.custom_data) == ("pw", b"data")
    assert "disagree on the hostname ('imds-host' and 'disc-host')" in caplog.text
    assert "disagree on the admin user" in caplog.text
    assert "disagree on the disablePasswordAuthentication" in caplog.text
    assert "1 SSH key(s) IMDS does not list" in caplog.text
    assert "only by fingerprint ABCD" in caplog.text
    assert "pw" not in repr(combined)


def test_agreeing_sources_say_nothing(caplog):
    imds = metadata(computer_name="disc-host", admin_username="discuser", disable_password_authentication=False)
    with caplog.at_level(logging.WARNING):
        combine(imds, disc())
    assert caplog.text == ""


def test_a_pool_vm_is_a_pool_vm_whichever_source_says_so():
    assert combine(metadata(), disc(preprovisioned_vm=True, preprovisioned_vm_type="Savable")).pps_type == "Savable"
    assert combine(metadata(), disc(preprovisioned_vm=True)).is_pool_vm
    assert combine(metadata(pps_type="Running"), disc()).pps_type == "Running"
    assert not combine(metadata(), disc()).is_pool_vm


def test_the_disc_alone_when_imds_is_down():
    alone = from_disc(disc(), VM_ID)
    assert (alone.vm_id, alone.os_profile.computer_name, alone.os_profile.admin_username) == (
        VM_ID, "disc-host", "discuser")
    assert alone.os_profile.disable_password_authentication is False
    assert [k.key_data for k in alone.public_keys] == [ED25519]
    assert (alone.password, alone.custom_data) == ("pw", b"data")
    # not said on the disc: password login only with a password
    assert from_disc(disc(disable_ssh_password_auth=None), VM_ID).os_profile.disable_password_authentication is False
    assert from_disc(disc(disable_ssh_password_auth=None, password=None), VM_ID).os_profile.disable_password_authentication


@pytest.mark.parametrize("missing", ["hostname", "username"])
def test_the_disc_alone_needs_a_host_name_and_a_user(missing):
    with pytest.raises(IncompleteDisc):
        from_disc(disc(**{missing: None}), VM_ID)
