"""Boot test: the guides' whole bake path on Debian 12, followed literally, then a VM from the image.

docs/images/ tells a user to build an image this way: in a build VM, run the install script
(docs/examples/packer/install-azprov.sh) with the .deb, then as the last commands
``azprov deprovision --force --user`` and ``azprov check`` (docs/examples/gallery/capture.sh
runs them over SSH as the login user with sudo, the Packer and Image Builder examples the same
commands), then capture the disk.  This module does exactly that, with real boots:

1. **The build VM** is the boot tests' Debian 12 base tree with Debian's ``waagent`` and
   ``cloud-init`` (as Debian's marketplace images have them) and without azprov.  Under nspawn
   neither acts: waagent's unit is limited to Hyper-V, and cloud-init's generator finds no data
   source and leaves it disabled, so the script's wait for cloud-init returns at once.  The container has no internet: ``apt-get update`` in the
   install script fails to resolve the mirror, which apt reports as warnings (exit 0), and the
   ``.deb``'s dependencies (python3-requests, python3-defusedxml, python3-systemd,
   openssh-client, passwd; Recommends openssh-server, sudo) are already in the base tree's
   package list, so ``apt-get install ./azprov.deb`` needs no download.  On Azure they would come
   from the mirror.  That is the only difference from a real build.
2. **Install** (boot 1): the tree boots and, from a test-only unit after everything started,
   runs the install script as Packer's shell provisioner would (the package uploaded to
   ``/tmp/azprov.deb``, its default).  It installs azprov and purges waagent and cloud-init.
3. **A dirty build VM** (boot 2): the build VM boots as a VM that azprov provisions against the
   emulator (as when the build VM is created from an earlier azprov image), so it has an admin
   user with keys and a sudoers drop-in, SSH host keys, a machine id, azprov's state and a DHCP
   lease (written into the tree before the boot, as dhclient would on Azure: nspawn runs no
   DHCP client).  Boot 3 logs in over SSH as that admin user: ``sudo azprov check`` must exit 10
   naming each of those leftovers; then the guide's own remote script, read from capture.sh,
   runs over SSH with sudo (``azprov deprovision --force --user``, ``userdel`` of the login
   user, ``azprov check``) and must succeed.  The build VM also carries what a marketplace
   image's WALinuxAgent and cloud-init keep of their VM (tests/support/agent_leftovers.py:
   ``ovf-env.xml``, certificates and transport key, the provisioned marker, an extension's
   directory, cloud-init's instance, seed and logs): check must name them, deprovision remove them.  The disk after the shutdown passes
   ``azprov check --root``.
4. **Capture**: the build VM's overlay is unmounted; its layers, read-only from now on, are the
   image.  A new VM with another computer name, admin user and key boots from it (boot 4): Ready
   reaches the emulator, the new user logs in over SSH with its key, the build VM's user, host
   keys and machine id are gone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from tests.boot import image as images
from tests.boot import nspawn
from tests.boot.fabric import boot_with_fabric, python
from tests.support import agent_leftovers, guides
from tests.test_boot import (STATE, UNIT, boot_vm, check_admin_user, check_ssh_login, keys,  # noqa: F401
                             reports, vm, workdir, workspace)

pytestmark = pytest.mark.boot

INSTALL_SCRIPT = images.REPO / "docs/examples/packer/install-azprov.sh"
UPLOAD = "var/tmp/azprov-upload"  # where the test puts the files for the in-VM steps
LEASE = "var/lib/dhcp/dhclient.eth0.leases"
# What an install boot may take: apt-get update's failing lookups, dpkg, the purge.
INSTALL_TIMEOUT = max(nspawn.BOOT_TIMEOUT, 300.0)
SSH = ("ssh -F /dev/null -i /var/lib/azprov-boottest/bake-key -o BatchMode=yes -o IdentitiesOnly=yes "
       "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=15 -o LogLevel=ERROR")


def guide_remote_script() -> str:
    """The commands capture.sh runs in the build VM as root (its ``<<'REMOTE'`` here-document),
    verbatim; tests/test_examples.py checks that the Packer and Image Builder examples run the
    same ones."""
    body = "\n".join(guides.capture_remote_commands()) + "\n"
    assert "azprov deprovision --force --user" in body and "azprov check" in body, body
    return body


def set_step(tree: Path, script: str) -> None:
    """Leave a shell script for the recorder to run (as root) once the boot has started."""
    (tree / images.RECORDER_DIR / "step").write_text(script)


def clear_step(tree: Path, booted: nspawn.Boot, workdir: Path, label: str) -> None:
    """After a boot: keep the step's output in the run directory (``label.step.log``) and remove
    the step and the keys the test left, so that none of it is captured."""
    step = booted.record.get("step") or {}
    (workdir / f"{label}.step.log").write_text(f"exit {step.get('rc')}\n{step.get('out', '')}\n"
                                              f"--- stderr ---\n{step.get('err', '')}")
    for name in ("step", "bake-key", "login-key", "login-user"):
        (tree / images.RECORDER_DIR / name).unlink(missing_ok=True)


def marked(output: str, name: str) -> int:
    """The exit code a step printed as ``azprov-bake: NAME exit N``."""
    found = [line.split()[-1] for line in output.splitlines() if line.startswith(f"azprov-bake: {name} exit ")]
    assert len(found) == 1, f"no exit code for {name} in the step's output:\n{output[-6000:]}"
    return int(found[0])


def section(output: str, name: str) -> str:
    begin, end = f"azprov-bake: {name} begin", f"azprov-bake: {name} exit "
    text = output.split(begin, 1)[1] if begin in output else ""
    return text.split(end, 1)[0]


def dpkg_installed(tree: Path) -> Dict[str, str]:
    """Package -> Status from the tree's dpkg database."""
    found, package = {}, None
    for line in (tree / "var/lib/dpkg/status").read_text().splitlines():
        if line.startswith("Package: "):
            package = line.split(": ", 1)[1]
        elif line.startswith("Status: ") and package:
            found[package] = line.split(": ", 1)[1]
    return found


def passwd_names(tree: Path):
    return {line.split(":")[0] for line in (tree / "etc/passwd").read_text().splitlines() if line}


def host_keys(tree: Path) -> Dict[str, str]:
    return {p.name: p.read_text() for p in (tree / "etc/ssh").glob("ssh_host_*_key.pub")}


# --- the build VM, step by step (each fixture is one stage of the bake) -----------------------

@pytest.fixture(scope="module")
def deb(workspace) -> Path:
    given = os.environ.get("AZPROV_BOOT_DEB")
    return Path(given) if given else images.build_deb(workspace.path / "dist")


@pytest.fixture(scope="module")
def build_vm(workspace, deb):
    """The build VM's disk: a Debian 12 tree with waagent and cloud-init and no azprov, the test-only recorder,
    a persistent journal, and the two files a build uploads (the .deb and the install script)."""
    base = images.base_tree(images.BUILD_VM_PACKAGES)
    overlay = workspace.overlay([base], "build-vm")
    tree = overlay.root
    assert not (tree / "usr/bin/azprov").exists() and "azprov" not in dpkg_installed(tree)
    images.add_recorder(tree)
    (tree / "var/log/journal").mkdir(exist_ok=True)
    upload = tree / UPLOAD
    upload.mkdir(parents=True)
    shutil.copy2(deb, upload / "azprov.deb")
    shutil.copy2(INSTALL_SCRIPT, upload / "install-azprov.sh")
    return overlay


@pytest.fixture(scope="module")
def installed(build_vm, keys, workdir):
    """Boot 1: the install script runs in the booted build VM, as Packer's provisioners do."""
    tree = build_vm.root
    set_step(tree, f"""\
# Packer's "file" provisioner uploads the package to /tmp/azprov.deb (the script's default);
# its "shell" provisioner then runs the script as root.
install -m 0644 /{UPLOAD}/azprov.deb /tmp/azprov.deb
echo "azprov-bake: install begin"
bash /{UPLOAD}/install-azprov.sh 2>&1
echo "azprov-bake: install exit $?"
""")
    scenario = vm("azprov-build-install", "unused", keys["vm1"][1], incarnation=1)
    booted, records = boot_with_fabric(tree, scenario, workdir, "bake-1-install", timeout=INSTALL_TIMEOUT)
    clear_step(tree, booted, workdir, "bake-1-install")
    return booted, records


@pytest.fixture(scope="module")
def build_scenario(keys) -> dict:
    return vm("azprov-build", "builder", keys["vm1"][1], incarnation=2)


@pytest.fixture(scope="module")
def dirty(installed, build_vm, build_scenario, keys, workdir):
    """Boot 2: the build VM provisioned by azprov, with a DHCP lease as dhclient leaves one."""
    tree = build_vm.root
    lease = tree / LEASE
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.write_text('lease {\n  interface "eth0";\n  fixed-address 10.0.0.4;\n'
                     "  option unknown-245 a8:3f:81:10;\n  renew 0 2099/01/01 00:00:00;\n"
                     "  expire 0 2099/01/01 00:00:00;\n}\n")
    # what the marketplace image's WALinuxAgent and cloud-init kept of the build VM (secrets,
    # markers, an extension it ran, logs), as it is after their packages were purged
    agent_leftovers.plant(str(tree), kept=False)
    booted, records = boot_vm(tree, build_scenario, "bake-2-build-vm", workdir, login_key=keys["vm1"][0])
    clear_step(tree, booted, workdir, "bake-2-build-vm")
    machine_id = (tree / "etc/machine-id").read_text().strip()
    return booted, records, host_keys(tree), machine_id


@pytest.fixture(scope="module")
def generalized(dirty, build_vm, build_scenario, keys, workdir):
    """Boot 3: over SSH as the admin user, ``sudo azprov check`` (must fail), then the guide's
    remote script (deprovision, userdel, check).  Then ``azprov check --root`` on the shut-down disk."""
    tree = build_vm.root
    target = f"{build_scenario['admin_username']}@127.0.0.1"
    (tree / images.RECORDER_DIR / "bake-key").write_bytes(keys["vm1"][0].read_bytes())
    os.chmod(tree / images.RECORDER_DIR / "bake-key", 0o600)
    set_step(tree, f"""\
echo "azprov-bake: check-before begin"
{SSH} {target} sudo azprov check --json
echo "azprov-bake: check-before exit $?"
echo "azprov-bake: guide begin"
{SSH} {target} sudo sh -ex <<'REMOTE' 2>&1
{guide_remote_script()}REMOTE
echo "azprov-bake: guide exit $?"
""")
    booted, records = boot_with_fabric(tree, build_scenario, workdir, "bake-3-generalize")
    clear_step(tree, booted, workdir, "bake-3-generalize")
    after = subprocess.run([python(), "-m", "azprov", "check", "--root", str(tree), "--json"],
                           capture_output=True, text=True, timeout=300, cwd=images.REPO,
                           env=dict(images.CLEAN_ENV, PYTHONPATH=str(images.REPO)))
    return booted, records, after


@pytest.fixture(scope="module")
def image_layers(generalized, build_vm):
    """Capture: the build VM is shut down and its disk frozen; its layers are the image."""
    build_vm.unmount()
    return [build_vm.upper, *build_vm.lowers]


@pytest.fixture(scope="module")
def new_vm_scenario(keys) -> dict:
    return vm("azprov-from-image", "newadmin", keys["vm2"][1], incarnation=9)


@pytest.fixture(scope="module")
def new_vm(image_layers, workspace, new_vm_scenario, keys, workdir):
    """Boot 4: a VM created from the captured image, as another VM with another user and key."""
    tree = workspace.overlay(image_layers, "vm-from-image").root
    booted, records = boot_vm(tree, new_vm_scenario, "bake-4-new-vm", workdir, login_key=keys["vm2"][0])
    return tree, booted, records


# --- the stages ----------------------------------------------------------------------------------

def test_install_script_installs_azprov_and_purges_the_agents_in_the_build_vm(installed, build_vm):
    booted, records = installed
    step = booted.record["step"]
    output = step["out"] + step["err"]
    assert marked(output, "install") == 0, output[-6000:]
    log = section(output, "install")
    assert "install-azprov: waiting for cloud-init to finish" in log, log
    assert "install-azprov: purging waagent" in log and "install-azprov: purging cloud-init" in log, log
    assert "install-azprov: done" in log, log
    tree = build_vm.root
    packages = dpkg_installed(tree)
    assert packages.get("azprov") == "install ok installed", packages.get("azprov")
    for agent in ("waagent", "cloud-init"):
        assert packages.get(agent, "purge ok not-installed").endswith("not-installed"), packages[agent]
    assert not (tree / "etc/waagent.conf").exists() and not (tree / "usr/sbin/waagent").exists()
    assert not (tree / "etc/cloud").exists() and not (tree / "usr/bin/cloud-init").exists()
    assert os.path.islink(images.enable_link(tree, UNIT)), "the package did not enable azprov.service"
    assert not (tree / "tmp/azprov.deb").exists()
    # the package enables azprov but never starts it: nothing reached the fabric during the build
    assert records == [], records
    assert booted.unit(UNIT)["ExecMainStartTimestampMonotonic"] in ("0", ""), booted.unit(UNIT)


def test_build_vm_is_provisioned_by_azprov_and_dirty(dirty, build_vm, build_scenario):
    booted, records, keys_before, machine_id = dirty
    assert [r["report"]["state"] for r in reports(records)] == ["Ready"], booted.explain()
    check_admin_user(build_vm.root, build_scenario["admin_username"], build_scenario["public_keys"][0])
    check_ssh_login(booted, build_scenario)
    assert keys_before and machine_id


def test_check_fails_on_the_dirty_build_vm_naming_each_leftover(generalized):
    booted, _, _ = generalized
    output = booted.record["step"]["out"]
    assert marked(output, "check-before") == 10, output[-6000:]
    verdict = json.loads(section(output, "check-before"))
    assert verdict["ready_for_capture"] is False
    found = {problem["check"] for problem in verdict["problems"]}
    assert {"unit", "state", "host_keys", "machine_id", "leases", "admin_user", "agent_state"} <= found, \
        verdict["problems"]
    agents = " ".join(problem["problem"] for problem in verdict["problems"] if problem["check"] == "agent_state")
    for name in ("ovf-env.xml", "TransportPrivate.pem", "provisioned", agent_leftovers.EXTENSION,
                 "/var/lib/cloud/instance", "/var/lib/cloud/seed"):
        assert name in agents, (name, agents)
    assert all(problem["fix"] for problem in verdict["problems"])


def test_guides_last_commands_generalize_the_build_vm_and_check_passes(generalized, build_vm, build_scenario):
    booted, records, after = generalized
    output = booted.record["step"]["out"]
    guide = section(output, "guide")
    assert marked(output, "guide") == 0, f"the guide's remote script failed:\n{guide[-6000:]}"
    assert "ready for capture: yes" in guide, guide
    assert records == [], f"deprovisioning talked to the fabric: {records}"
    # the disk as it is captured, after the shutdown
    assert after.returncode == 0, after.stdout + after.stderr
    assert json.loads(after.stdout)["ready_for_capture"] is True
    tree = build_vm.root
    assert build_scenario["admin_username"] not in passwd_names(tree)
    assert not (tree / "home" / build_scenario["admin_username"]).exists()
    assert not (tree / STATE).exists() and not (tree / LEASE).exists()
    assert host_keys(tree) == {}
    assert agent_leftovers.left(str(tree)) == [], "WALinuxAgent's or cloud-init's per-VM state survived"
    assert os.path.islink(images.enable_link(tree, UNIT))


def test_a_vm_from_the_captured_image_provisions_as_itself(new_vm, new_vm_scenario, build_scenario, dirty):
    tree, booted, records = new_vm
    _, _, build_host_keys, build_machine_id = dirty
    ready = [r for r in reports(records) if r["report"]["state"] == "Ready"]
    assert ready, f"no Ready from the new VM\n{booted.explain()}"
    assert [r["report"]["state"] for r in reports(records)] == ["Ready"]
    for record in ready:
        assert record["status"] == 200 and record["violations"] == [], record
        assert (record["report"]["incarnation"], record["report"]["container_id"], record["report"]["instance_id"]) == \
            (new_vm_scenario["incarnation"], new_vm_scenario["container_id"], new_vm_scenario["instance_id"])
    assert booted.record["hostname"] == new_vm_scenario["computer_name"]
    check_admin_user(tree, new_vm_scenario["admin_username"], new_vm_scenario["public_keys"][0])
    check_ssh_login(booted, new_vm_scenario)
    # nothing of the build VM is left to let someone in or to share
    old = build_scenario["admin_username"]
    assert old not in passwd_names(tree)
    assert not (tree / "home" / old).exists()
    assert old not in (tree / "etc/sudoers.d/90-azprov").read_text()
    new_keys = host_keys(tree)
    assert new_keys and not set(new_keys.values()) & set(build_host_keys.values())
    machine_id = (tree / "etc/machine-id").read_text().strip()
    assert machine_id and machine_id != build_machine_id
    assert json.loads((tree / STATE).read_text())["vm_id"] == new_vm_scenario["vm_id"]
    assert agent_leftovers.left(str(tree)) == []  # no other agent's state of the build VM either
    assert not os.path.lexists(images.enable_link(tree, UNIT))
