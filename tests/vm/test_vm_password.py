"""A password VM from the provisioning disc (UDF, as Azure writes it; no SSH key anywhere): read
by azprov's own reader with the kernel's ``udf`` module blacklisted, and once more with the module
loaded.  Both VMs boot at the same time."""

from __future__ import annotations

import re
import secrets
import threading

import pytest

from azprov.fabric.vm import VirtualMachine, health_reports
from tests.vm import harness

pytestmark = harness.MARKS

PASSWORD = "Vm-Test-" + secrets.token_hex(6)
USER = "pwadmin"
PROBE = ("id -un; hostname; if grep -qw '^udf' /proc/modules; then echo udf-loaded; else echo udf-absent; fi;"
         " findmnt -n /dev/sr0 >/dev/null && echo sr0-mounted || echo sr0-not-mounted;"
         " sudo -n true 2>/dev/null && echo sudo-without-password || echo sudo-needs-password")
# azprov's line on the serial console (journal+console) saying how it read the disc
READ_LINE = re.compile(r"read ovf-env\.xml \(\d+ bytes\) from /dev/sr0 \((\w+)\)")


def _boot(image, directory, kernel_option: str, name: str, found: dict) -> None:
    data = harness.scenario(name, USER, [], incarnation=4, password=PASSWORD)
    try:
        disc = harness.ovf_disc(data, directory / "disc", udf=True)
        with VirtualMachine(harness.setup(image, data, disc=disc, append=kernel_option), directory) as vm:
            vm.boot()
            harness.wait_ready(vm)
            login = vm.wait_for_ssh(USER, None, 120, password=PASSWORD)
            probe = vm.ssh(USER, None, PROBE, password=PASSWORD)
            key_login = vm.ssh(USER, harness_key(directory), "true")
            found[kernel_option] = {"data": data, "login": login, "probe": probe, "records": vm.records(),
                                    "key_login": key_login, "console": vm.console()}
            vm.shutdown()
    except BaseException as exc:  # reported by the test, not lost in the thread
        found[kernel_option] = {"error": exc}


def harness_key(directory):
    """A key the VM was never given: a key login must fail."""
    from tests.boot.image import run

    key = directory / "stranger"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    return key


@pytest.fixture(scope="module")
def password_vms(vm_workspace, bookworm):
    found: dict = {}
    threads = []
    for option, name in (("modprobe.blacklist=udf", "azprov-vm-pw-noudf"), ("modules-load=udf", "azprov-vm-pw-udf")):
        directory = vm_workspace.path / "vms" / name
        threads.append(threading.Thread(target=_boot, args=(bookworm, directory, option, name, found)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


@pytest.mark.parametrize("option, module", [("modprobe.blacklist=udf", "udf-absent"), ("modules-load=udf", "udf-loaded")])
def test_password_vm_provisions_from_the_disc_read_by_azprovs_own_reader(password_vms, option, module):
    found = password_vms[option]
    if "error" in found:
        raise found["error"]
    data = found["data"]
    ready = health_reports(found["records"], "Ready")
    assert len(ready) == 1 and ready[0]["status"] == 200, found["records"]
    assert health_reports(found["records"]) == ready
    assert found["login"] is not None and found["login"].returncode == 0, found["login"]
    probe = found["probe"]
    assert probe.returncode == 0, (probe.stdout, probe.stderr)
    lines = probe.stdout.split("\n")
    assert lines[0] == USER and lines[1] == data["computer_name"], probe.stdout
    assert lines[2] == module, f"{option}: the udf module is not as asked: {probe.stdout}"
    assert lines[3] == "sr0-not-mounted" and lines[4] == "sudo-needs-password", probe.stdout
    assert READ_LINE.findall(found["console"]) == ["udf"], "azprov did not read the disc with its UDF reader"
    assert found["key_login"].returncode != 0, "a key the VM was never given logged in"
