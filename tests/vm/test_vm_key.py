"""A key VM in QEMU: Ready exactly once, an SSH login with the served key through the tap, the
Azure host name; the next boot sends the fabric nothing; the disk afterwards is whole."""

from __future__ import annotations

import pytest

from tests.vm import harness

pytestmark = harness.MARKS


@pytest.fixture(scope="module")
def key_vm(vm_workspace, bookworm, vm_key):
    private, public = vm_key
    data = harness.scenario("azprov-vm-key", "vmadmin", [public], incarnation=3)
    return data, harness.key_vm_run(bookworm, data, private, vm_workspace.path / "vms" / "key-vm")


def test_first_boot_reports_ready_exactly_once_with_the_served_ids(key_vm):
    data, outcome = key_vm
    harness.check_ready_once(outcome["first_records"], data)


def test_ssh_login_with_the_served_key_through_the_tap(key_vm):
    data, outcome = key_vm
    harness.check_key_login(outcome, data)


def test_second_boot_sends_nothing_and_azprov_stays_inactive(key_vm):
    data, outcome = key_vm
    harness.check_second_boot(outcome, data)


def test_the_disk_after_power_off_is_provisioned_and_whole(key_vm, vm_dir):
    data, outcome = key_vm
    harness.check_converged(outcome["disk"], data, vm_dir)


def test_every_dhcp_request_carries_the_vms_azure_name(key_vm):
    """What Azure DNS learns: dnsmasq's log of each DHCP request's host name (both boots).  The
    early stage sets the disc's name before the network, so not even the first request carries
    the image's name."""
    data, outcome = key_vm
    harness.check_dhcp_names(outcome, data)
