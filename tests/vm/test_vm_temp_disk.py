"""The temporary disk in a real VM: a SCSI disk at LUN 1 (QEMU's scsi-hd with Hyper-V's SCSI
vendor "Msft" and model "Virtual Disk") holding what Azure delivers, set up by
azprov-temp-disk.service at every boot.

1. First boot: the disk is a DOS-partitioned NTFS volume "Temporary Storage" with only the data
   loss warning (mkntfs + ntfscp): formatted and mounted on /mnt.
2. Reboot with the same disk: mounted again, the file written on it in boot 1 still there.
3. The disk replaced by a fresh one (a redeploy): formatted and mounted again, empty.
4. The disk replaced by one holding a user file: never formatted (its bytes unchanged after the
   boot), not mounted, the warning in ``azprov status``.

What QEMU cannot present is a VMBus device, so the guest cannot find the disk by its Hyper-V id;
the image says which device it is (``[temp_disk] device = "/dev/sda"``, a setting users have
too).  Detection by VMBus id and LUN is tested on recorded /sys trees (tests/test_disks.py) and
the udev names with udevadm (tests/test_udev_rules.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from azprov.disks import layout
from azprov.fabric.vm import VirtualMachine
from tests.support.disks import MIB, azure_disk
from tests.vm import harness
from tests.vm import image as vmimages

pytestmark = harness.MARKS

DROPIN = '[temp_disk]\n# QEMU has no VMBus: the SCSI disk at LUN 1 is named here\ndevice = "/dev/sda"\nwait = 60.0\n'
PROBE = ("findmnt -n -o SOURCE,FSTYPE /mnt || echo not-mounted; ls -A /mnt; "
         "sudo -n azprov status --json; systemctl show -P ActiveState azprov-temp-disk.service")


def scsi_disk(path: Path):
    return ("-device", "virtio-scsi-pci,id=scsi0",
            "-drive", f"file={path},format=raw,if=none,id=tempdisk,cache=writeback",
            "-device", "scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun=1,drive=tempdisk,"
                       "vendor=Msft,product=Virtual Disk")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def probe(vm, private):
    """(mount line, names on /mnt, azprov status's temp_disk, the unit's state) over SSH."""
    result = vm.ssh("vmadmin", private, PROBE, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    mount_line, rest = out.split("\n", 1)
    names, rest = rest.split("{", 1)
    status_text, unit_state = ("{" + rest).rsplit("}", 1)
    return mount_line.split(), names.split(), json.loads(status_text + "}")["temp_disk"], unit_state.strip()


def login(vm, private, timeout: float) -> None:
    last = vm.wait_for_ssh("vmadmin", private, timeout)
    assert last is not None and last.returncode == 0, f"no SSH login: {last}\n{harness.explain(vm)}"


@pytest.fixture(scope="module")
def temp_disk_vm(vm_workspace, bookworm, vm_key):
    private, public = vm_key
    workdir = vm_workspace.path / "vms" / "temp-disk-vm"
    workdir.mkdir(parents=True, exist_ok=True)
    dropin = workdir / "50-vm-temp-disk.toml"
    dropin.write_text(DROPIN)
    image = vmimages.variant(bookworm, workdir / "image.raw", [
        "cd /etc/azprov/azprov.toml.d", f"write {dropin} 50-vm-temp-disk.toml"])
    fresh = azure_disk(workdir / "temp-1.raw", 96 * MIB)
    data = harness.scenario("azprov-vm-tmp", "vmadmin", [public])
    disc = harness.ovf_disc(data, workdir / "disc", udf=False)
    seen = {}
    with VirtualMachine(harness.setup(image, data, disc=disc, extra_args=scsi_disk(fresh)), workdir) as vm:
        vm.boot()
        harness.wait_ready(vm)
        login(vm, private, 180)
        assert vm.wait_until(lambda: probe(vm, private)[3] in ("active", "failed"), 120), harness.explain(vm)
        seen["first"] = probe(vm, private)
        vm.ssh("vmadmin", private, "echo kept | sudo -n tee /mnt/work.txt >/dev/null")
        seen["first_clean"] = vm.shutdown()
        with open(fresh, "rb") as handle:
            seen["first_head"] = layout.own_filesystem(handle.read(4096))

        vm.boot()  # a reboot: same disk
        login(vm, private, harness.TIMEOUT)
        assert vm.wait_until(lambda: probe(vm, private)[3] in ("active", "failed"), 120), harness.explain(vm)
        seen["reboot"] = probe(vm, private)
        seen["reboot_clean"] = vm.shutdown()

        redeployed = azure_disk(workdir / "temp-2.raw", 96 * MIB)  # a redeploy: a new disk
        vm.setup = dataclasses.replace(vm.setup, extra_args=scsi_disk(redeployed))
        vm.boot()
        login(vm, private, harness.TIMEOUT)
        assert vm.wait_until(lambda: probe(vm, private)[3] in ("active", "failed"), 120), harness.explain(vm)
        seen["redeploy"] = probe(vm, private)
        seen["redeploy_clean"] = vm.shutdown()
        with open(redeployed, "rb") as handle:
            seen["redeploy_head"] = layout.own_filesystem(handle.read(4096))

        used = azure_disk(workdir / "temp-3.raw", 96 * MIB, files={"results.csv": b"run,score\n1,0.93\n"})
        before = digest(used)
        vm.setup = dataclasses.replace(vm.setup, extra_args=scsi_disk(used))
        vm.boot()
        login(vm, private, harness.TIMEOUT)
        assert vm.wait_until(lambda: probe(vm, private)[3] in ("active", "failed"), 120), harness.explain(vm)
        seen["used"] = probe(vm, private)
        seen["used_clean"] = vm.shutdown()
        seen["used_unchanged"] = digest(used) == before
        seen["console"] = vm.console(1)
    return seen


def test_first_boot_formats_the_disk_azure_delivered_and_mounts_it(temp_disk_vm):
    mount, names, status, _ = temp_disk_vm["first"]
    assert mount == ["/dev/sda", "ext4"], mount
    assert "DATALOSS_WARNING_README.txt" in names
    assert status["owner"] == "azprov"
    assert status["last_run"]["outcome"] == "formatted", status
    assert "Temporary Storage" in status["last_run"]["message"]
    assert temp_disk_vm["first_head"] == ("ext4", layout.LABEL)
    assert temp_disk_vm["first_clean"]


def test_a_reboot_mounts_the_same_filesystem_again(temp_disk_vm):
    mount, names, status, _ = temp_disk_vm["reboot"]
    assert mount == ["/dev/sda", "ext4"] and "work.txt" in names
    assert status["last_run"]["outcome"] == "mounted", status


def test_a_new_disk_after_a_redeploy_is_formatted_and_mounted(temp_disk_vm):
    mount, names, status, _ = temp_disk_vm["redeploy"]
    assert mount == ["/dev/sda", "ext4"]
    assert "work.txt" not in names and "DATALOSS_WARNING_README.txt" in names
    assert status["last_run"]["outcome"] == "formatted", status
    assert temp_disk_vm["redeploy_head"] == ("ext4", layout.LABEL)


def test_a_disk_holding_a_user_file_is_never_formatted(temp_disk_vm):
    mount, _, status, unit_state = temp_disk_vm["used"]
    assert mount == ["not-mounted"]
    assert status["last_run"]["outcome"] == "left-alone" and "results.csv" in status["last_run"]["message"]
    assert unit_state == "active"  # left alone is a warning, not a failed unit
    assert temp_disk_vm["used_unchanged"], "the disk holding a user file was written to"
