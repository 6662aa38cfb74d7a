"""Boot test: azprov next to Debian's real ``waagent`` kept for VM extensions only.

The image is the boot tests' Debian 12 image plus Debian's ``waagent`` package (its own cached
base tree), with ``Provisioning.Agent=disabled`` in ``/etc/waagent.conf`` as docs/images/batch.md
says, and azprov's stock unit and configuration.  Such a WALinuxAgent posts its own Ready as soon
as it starts; azprov must have the admin user and keys in place before any Ready reaches the
fabric, and its own Ready must come first.  The emulator's log tells the two agents apart by
their ``x-ms-agent-name`` header; the journal says when azprov's steps were done.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import List

import pytest

from tests.boot import image as images
from tests.test_boot import (UNIT, boot_vm, check_admin_user, check_ssh_login, keys, vm,  # noqa: F401
                             workdir, workspace)

pytestmark = pytest.mark.boot

WAAGENT_UNIT = "walinuxagent.service"


@pytest.fixture(scope="module")
def waagent_layers(workspace) -> List[Path]:
    given = os.environ.get("AZPROV_BOOT_DEB")
    deb = Path(given) if given else images.build_deb(workspace.path / "dist")
    base = images.base_tree(images.WAAGENT_PACKAGES)
    return images.make_image(workspace, base, deb, name="waagent-image",
                             waagent={"Provisioning.Agent": "disabled"})


@pytest.fixture(scope="module")
def coexisting_boot(workspace, waagent_layers, keys, workdir):  # noqa: F811
    tree = workspace.overlay(waagent_layers, "waagent-vm").root
    scenario = vm("azprov-with-waagent", "extadmin", keys["vm1"][1], incarnation=4)
    # An Azure VM has a DHCP lease with option 245 (the WireServer); WALinuxAgent finds its
    # endpoint there (the namespace has no route it could test), as azprov does.
    lease = tree / "var/lib/dhcp/dhclient.eth0.leases"
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.write_text('lease {\n  interface "eth0";\n  fixed-address 10.0.0.4;\n'
                     "  option unknown-245 a8:3f:81:10;\n  renew 0 2099/01/01 00:00:00;\n"
                     "  expire 0 2099/01/01 00:00:00;\n}\n")
    # the recorder waits for WALinuxAgent's own "provisioned" marker (it posts Ready right after)
    (tree / images.RECORDER_DIR / "wait-for").write_text("/var/lib/waagent/provisioned 90\n")
    booted, records = boot_vm(tree, scenario, "waagent-vm", workdir, login_key=keys["vm1"][0])
    return tree, scenario, booted, records


def _agent(record: dict) -> str:
    return (record.get("headers") or {}).get("x-ms-agent-name", "")


def _when(record: dict) -> datetime.datetime:
    return datetime.datetime.fromisoformat(record["time"])


def test_the_image_keeps_waagent_for_extensions_only(waagent_layers, workspace):
    tree = workspace.overlay(waagent_layers, "waagent-pristine").root
    assert (tree / "usr/sbin/waagent").exists()
    assert os.path.islink(images.enable_link(tree, WAAGENT_UNIT)), "the package did not enable walinuxagent"
    assert "Provisioning.Agent=disabled" in (tree / "etc/waagent.conf").read_text().splitlines()
    assert os.path.islink(images.enable_link(tree, UNIT))


def test_azprov_provisions_next_to_waagent(coexisting_boot):
    tree, scenario, booted, records = coexisting_boot
    assert booted.exit_code == 0, booted.explain()
    azprov = booted.unit(UNIT)
    assert (azprov["Result"], azprov["ExecMainStatus"]) == ("success", "0"), booted.explain()
    check_admin_user(tree, scenario["admin_username"], scenario["public_keys"][0])
    check_ssh_login(booted, scenario)


def test_waagent_really_ran_and_talked_to_the_fabric(coexisting_boot):
    tree, scenario, booted, records = coexisting_boot
    waagent = booted.record["units_after"][WAAGENT_UNIT]
    assert waagent["ActiveState"] == "active", (waagent, booted.explain())
    assert [r for r in records if _agent(r) == "WALinuxAgent"], \
        f"WALinuxAgent sent nothing: {[(r['endpoint'], _agent(r)) for r in records]}"
    assert booted.record["waited"]["found"], "WALinuxAgent never wrote /var/lib/waagent/provisioned"


def test_azprovs_ready_comes_first_and_after_the_keys(coexisting_boot):
    tree, scenario, booted, records = coexisting_boot
    health = sorted((r for r in records if r["endpoint"] == "health"), key=_when)
    assert health, f"no health report at all: {records}"
    first = health[0]
    assert _agent(first) == "azprov", [(_agent(r), r["time"]) for r in health]
    assert first["report"]["state"] == "Ready" and first["status"] == 200, first
    # Every request of WALinuxAgent (its goal state fetches; its own Ready when it gets that far:
    # bookworm's waagent 2.2 stops in its goal-state handling under Python 3.11, a
    # format_exception(etype=...) bug, before posting one) comes after azprov's Ready.
    waagent_requests = [r for r in records if _agent(r) == "WALinuxAgent"]
    assert waagent_requests and all(_when(r) > _when(first) for r in waagent_requests)
    # journal: the user and its keys were in place before the first Ready reached the fabric
    done = booted.entries(_SYSTEMD_UNIT=UNIT, AZPROV_STEP="ssh_keys", AZPROV_OUTCOME="ok")
    assert done, booted.explain()
    keys_done = datetime.datetime.fromtimestamp(int(done[0]["__REALTIME_TIMESTAMP"]) / 1e6,
                                                datetime.timezone.utc)
    assert keys_done < _when(first)
    # and WALinuxAgent started only after azprov was done
    started = booted.unit(UNIT)
    assert int(booted.record["units_after"][WAAGENT_UNIT]["InactiveExitTimestampMonotonic"]) >= \
        int(started["ActiveEnterTimestampMonotonic"]) > 0


# --- the other modes, as docs/images/README.md's table promises ---------------------------------
# Debian's package ships Provisioning.Agent=cloud-init (WALinuxAgent would wait 30 minutes for
# cloud-init, then fail the VM); auto (unset) makes WALinuxAgent provision the VM itself.  Either
# way azprov refuses before changing anything and says why in its ProvisioningFailed report.
MODES = {"cloud-init": "waits up to 1800 s for cloud-init", "auto": "it provisions this VM itself"}


@pytest.fixture(scope="module", params=sorted(MODES))
def other_mode_boot(request, workspace, waagent_layers, keys, workdir):  # noqa: F811
    mode = request.param
    tree = workspace.overlay(waagent_layers, f"waagent-{mode}").root
    images.set_waagent_conf(tree, {"Provisioning.Agent": mode})
    scenario = vm(f"azprov-waagent-{mode}", "modeadmin", keys["vm1"][1], incarnation=5)
    booted, records = boot_vm(tree, scenario, f"waagent-{mode}", workdir)
    return mode, tree, booted, records


def test_any_other_mode_is_refused_with_the_reason(other_mode_boot):
    mode, tree, booted, records = other_mode_boot
    ours = [r for r in records if r["endpoint"] == "health" and _agent(r) == "azprov"]
    assert len(ours) == 1, [(r["endpoint"], _agent(r)) for r in records]
    report = ours[0]["report"]
    assert (report["state"], report["substatus"]) == ("NotReady", "ProvisioningFailed"), report
    assert "reason=other_provisioner_active" in report["description"], report
    assert f"Provisioning.Agent={mode}" in report["description"] and MODES[mode] in report["description"]
    assert not (tree / "home/modeadmin").exists()  # refused before any change
