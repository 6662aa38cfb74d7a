"""A key VM in QEMU: Ready exactly once, an SSH login with the served key through the tap, the
Azure host name; the next boot sends the fabric nothing; the disk afterwards is whole."""

from __future__ import annotations

import pytest

from azprov.fabric.vm import VirtualMachine, health_reports
from tests.vm import harness

pytestmark = harness.MARKS


@pytest.fixture(scope="module")
def key_vm(vm_workspace, bookworm, vm_key):
    """Two boots of one VM: provision (then a clean power-off), boot again."""
    private, public = vm_key
    data = harness.scenario("azprov-vm-key", "vmadmin", [public], incarnation=3)
    workdir = vm_workspace.path / "vms" / "key-vm"
    disc = harness.ovf_disc(data, workdir / "disc", udf=False)
    outcome = {}
    with VirtualMachine(harness.setup(bookworm, data, disc=disc), workdir) as vm:
        vm.boot()
        harness.wait_ready(vm)
        login = vm.wait_for_ssh("vmadmin", private, 120)
        outcome["login"] = login
        outcome["session"] = vm.ssh("vmadmin", private, "id -un; hostname; sudo -n true && echo sudo-ok;"
                                    " systemctl is-enabled azprov.service || true")
        outcome["first_records"] = vm.records()
        outcome["first_clean"] = vm.shutdown()
        vm.boot()
        outcome["second_login"] = vm.wait_for_ssh("vmadmin", private, harness.TIMEOUT)
        outcome["second_session"] = vm.ssh("vmadmin", private, "systemctl show -P ActiveState azprov.service;"
                                           " hostname")
        outcome["second_records"] = vm.records()[len(outcome["first_records"]):]
        outcome["second_clean"] = vm.shutdown()
        outcome["disk"] = harness.read_disk(vm, "vmadmin")
        outcome["dhcp"] = vm.dhcp_names()
        outcome["console"] = vm.console(1)
    return data, outcome


def test_first_boot_reports_ready_exactly_once_with_the_served_ids(key_vm):
    data, outcome = key_vm
    records = outcome["first_records"]
    ready = health_reports(records, "Ready")
    assert len(ready) == 1, [(r["endpoint"], r.get("report")) for r in records]
    (report,) = ready
    assert report["status"] == 200 and report["violations"] == []
    assert report["report"]["incarnation"] == data["incarnation"]
    assert report["report"]["container_id"] == data["container_id"]
    assert report["report"]["instance_id"] == data["instance_id"]
    assert health_reports(records) == ready, "a report other than Ready was sent"
    assert [r for r in records if r.get("violations")] == []


def test_ssh_login_with_the_served_key_through_the_tap(key_vm):
    data, outcome = key_vm
    assert outcome["login"] is not None and outcome["login"].returncode == 0, outcome["login"]
    session = outcome["session"]
    assert session.returncode == 0, session.stderr
    assert session.stdout.split() == ["vmadmin", data["computer_name"], "sudo-ok", "disabled"]


def test_second_boot_sends_nothing_and_azprov_stays_inactive(key_vm):
    data, outcome = key_vm
    assert outcome["first_clean"] and outcome["second_clean"], "the VM did not power off on ACPI power-off"
    assert outcome["second_login"] is not None and outcome["second_login"].returncode == 0
    assert outcome["second_session"].stdout.split() == ["inactive", data["computer_name"]]
    assert outcome["second_records"] == []


def test_the_disk_after_power_off_is_provisioned_and_whole(key_vm, vm_dir):
    data, outcome = key_vm
    harness.check_converged(outcome["disk"], data, vm_dir)


def test_every_dhcp_request_carries_the_vms_azure_name(key_vm):
    """What Azure DNS learns: dnsmasq's log of each DHCP request's host name (both boots).  The
    early stage sets the disc's name before the network, so not even the first request carries
    the image's name."""
    data, outcome = key_vm
    names = [request.name for request in outcome["dhcp"]]
    assert len(names) >= 2, f"dnsmasq logged {names} ('client provides name:' lines)"
    assert set(names) == {data["computer_name"]}, names
