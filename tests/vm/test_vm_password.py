"""A password VM from the provisioning disc (UDF, as Azure writes it; no SSH key anywhere): read
by azprov's own reader with the kernel's ``udf`` module blacklisted, and once more with the module
loaded.  Both VMs boot at the same time."""

from __future__ import annotations

import secrets

import pytest

from tests.vm import harness

pytestmark = harness.MARKS

PASSWORD = "Vm-Test-" + secrets.token_hex(6)
USER = "pwadmin"
OPTIONS = {"modprobe.blacklist=udf": "udf-absent", "modules-load=udf": "udf-loaded"}


@pytest.fixture(scope="module")
def password_vms(vm_workspace, bookworm):
    scenarios = {option: harness.scenario(f"azprov-vm-pw{i}", USER, [], incarnation=4, password=PASSWORD)
                 for i, option in enumerate(OPTIONS)}

    def job(option):
        directory = vm_workspace.path / "vms" / f"password-{option.split('=')[0]}"
        return lambda: harness.password_vm_run(bookworm, scenarios[option], PASSWORD, directory, option)

    return scenarios, harness.in_parallel({option: job(option) for option in OPTIONS})


@pytest.mark.parametrize("option", OPTIONS)
def test_password_vm_provisions_from_the_disc_read_by_azprovs_own_reader(password_vms, option):
    scenarios, results = password_vms
    harness.check_password_vm(harness.result(results, option), scenarios[option], OPTIONS[option])
