"""Debian 13 (trixie: Python 3.13, systemd 257, OpenSSH 10): the same image recipe, and the key
and password scenarios of Debian 12, both VMs booting at the same time."""

from __future__ import annotations

import secrets

import pytest

from tests.vm import harness

pytestmark = harness.MARKS

PASSWORD = "Vm-Trixie-" + secrets.token_hex(6)


@pytest.fixture(scope="module")
def trixie_vms(vm_workspace, trixie, vm_key):
    private, public = vm_key
    key_data = harness.scenario("azprov-trixie-key", "trixieadmin", [public], incarnation=6)
    password_data = harness.scenario("azprov-trixie-pw", "pwadmin", [], incarnation=7, password=PASSWORD)
    vms = vm_workspace.path / "vms"
    results = harness.in_parallel({
        "key": lambda: harness.key_vm_run(trixie, key_data, private, vms / "trixie-key"),
        "password": lambda: harness.password_vm_run(trixie, password_data, PASSWORD, vms / "trixie-password",
                                                    "modprobe.blacklist=udf"),
    })
    return key_data, password_data, results


def test_trixie_image_is_debian_13(trixie):
    from tests.vm import image as vmimages

    version = vmimages.read_file(trixie.disk, "/etc/debian_version") or ""
    assert version.startswith("13") or version.startswith("trixie"), version


def test_trixie_key_vm(trixie_vms, vm_dir):
    data, _, results = trixie_vms
    outcome = harness.result(results, "key")
    harness.check_ready_once(outcome["first_records"], data)
    harness.check_key_login(outcome, data)
    harness.check_second_boot(outcome, data)
    harness.check_dhcp_names(outcome, data)
    harness.check_converged(outcome["disk"], data, vm_dir)


def test_trixie_password_vm_with_udf_blacklisted(trixie_vms):
    _, data, results = trixie_vms
    harness.check_password_vm(harness.result(results, "password"), data, "udf-absent")
