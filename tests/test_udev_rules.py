"""udev/66-azprov-azure-disks.rules run by systemd's own udev (``udevadm test``) against recorded
``/sys`` trees of Azure VMs (tests/support/disks.py), and the links it makes.

No Hyper-V here, so the test builds the world udev sees in a private mount namespace
(``unshare -m``), leaving this machine's /dev, /run and udev database untouched:

- ``/sys`` is the recorded tree (``SYSTEMD_DEVICE_VERIFY_SYSFS=0`` lets sd-device read a tree that
  is not sysfs: systemd's switch for exactly this kind of test);
- ``/dev`` and ``/run`` are empty tmpfs (``udevadm test`` really creates links and database
  files), with the disks' device nodes made by ``mknod``;
- the rules directories hold only azprov's file and one line standing in for ``scsi_id``
  (``60-persistent-storage.rules`` sets ``ID_VENDOR``/``ID_MODEL`` from the SCSI INQUIRY data,
  which needs a real device: ``Msft`` and ``Virtual_Disk``, the vendor and model with spaces as
  underscores).

The links are then read from the namespace's /dev.  What this does not prove: a real Hyper-V
guest's /sys beyond the facts recorded (see tests/support/disks.py), and the event order of a
real boot.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from tests.support import disks as support
from tests.support.cli import requires_root

RULES = Path(__file__).resolve().parent.parent / "udev" / "66-azprov-azure-disks.rules"
SCSI_ID = ('SUBSYSTEM=="block", ATTRS{vendor}=="Msft*", ATTRS{model}=="Virtual Disk*", '
           'ENV{ID_VENDOR}="Msft", ENV{ID_MODEL}="Virtual_Disk"\n')
SCRIPT = r"""
set -e
mount --make-rprivate /
mount -t tmpfs none /run
mount -t tmpfs none /dev
mknod -m 666 /dev/null c 1 3
mkdir -p /run/udev/rules.d
for d in /etc/udev/rules.d /usr/lib/udev/rules.d /lib/udev/rules.d /run/udev/rules.d; do
    [ -d "$d" ] && mount --bind "$RULES_DIR" "$d"
done
mount --bind "$TREE/sys" /sys
export SYSTEMD_DEVICE_VERIFY_SYSFS=0
for entry in $DEVICES; do
    name=${entry%%=*}; numbers=${entry#*=}
    mknod "/dev/$name" b "${numbers%%:*}" "${numbers#*:}"
done
for entry in $DEVICES; do
    name=${entry%%=*}
    udevadm test --action=add "/sys/class/block/$name" >"$OUT/$name.log" 2>&1
done
if [ -d /dev/disk ]; then find /dev/disk -type l -printf '%p %l\n'; fi
"""

pytestmark = [requires_root, pytest.mark.skipif(shutil.which("udevadm") is None or shutil.which("unshare") is None,
                                                reason="needs udevadm and unshare")]


def links(tmp_path: Path, tree: support.SysTree) -> Dict[str, str]:
    """``{link: device name}`` udev makes for every disk and partition of ``tree``."""
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES, rules / RULES.name)
    (rules / "10-scsi-id-stand-in.rules").write_text(SCSI_ID)
    devices = []
    for disk in tree.disks:
        major, minor = disk.dev.split(":")
        devices.append(f"{disk.name}={major}:{minor}")
        for number in range(1, disk.partitions + 1):
            name = f"{disk.name}p{number}" if disk.name[-1].isdigit() else f"{disk.name}{number}"
            devices.append(f"{name}={major}:{int(minor) + number}")
    out = tmp_path / "logs"
    out.mkdir()
    env = {**support.CLEAN_ENV, "RULES_DIR": str(rules), "TREE": str(tree.root), "OUT": str(out),
           "DEVICES": " ".join(devices)}
    result = subprocess.run(["unshare", "-m", "sh", "-c", SCRIPT], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    for log in out.iterdir():
        text = log.read_text()
        assert "Reading rules file: " in text and RULES.name in text, text[-2000:]
        for line in text.splitlines():  # the parser's complaints name the file and line
            if RULES.name in line and re.search(r"(?i)invalid|error|ignor|unknown|unexpected|warning", line):
                pytest.fail(f"{log.name}: {line}")
        assert "failed with exit code" not in text, text[-2000:]
    found = {}
    for line in result.stdout.splitlines():
        link, target = line.split(" ", 1)
        found[link] = Path(target).name
    return found


def test_generation_2_names(tmp_path):
    assert links(tmp_path, support.gen2(tmp_path / "tree")) == {
        "/dev/disk/azure/root": "sda",
        "/dev/disk/azure/root-part1": "sda1",
        "/dev/disk/azure/root-part2": "sda2",
        "/dev/disk/azure/root-part3": "sda3",
        "/dev/disk/azure/resource": "sdb",
        "/dev/disk/azure/resource-part1": "sdb1",
        "/dev/disk/cloud/azure_resource": "sdb",
        "/dev/disk/cloud/azure_resource-part1": "sdb1",
        "/dev/disk/azure/scsi1/lun2": "sdc",
    }


def test_generation_1_names(tmp_path):
    assert links(tmp_path, support.gen1(tmp_path / "tree")) == {
        "/dev/disk/azure/root": "sda",
        "/dev/disk/azure/root-part1": "sda1",
        "/dev/disk/azure/root-part2": "sda2",
        "/dev/disk/azure/resource": "sdb",
        "/dev/disk/azure/resource-part1": "sdb1",
        "/dev/disk/cloud/azure_resource": "sdb",
        "/dev/disk/cloud/azure_resource-part1": "sdb1",
        "/dev/disk/azure/scsi1/lun0": "sdc",
        "/dev/disk/azure/scsi1/lun7": "sdd",
        "/dev/disk/azure/scsi1/lun7-part1": "sdd1",
    }


def test_no_names_for_the_dvd_other_disks_and_nvme(tmp_path):
    tree = support.sys_tree(tmp_path / "tree", [
        support.Disk("sda", support.GEN2_SCSI0, "0:0:0:2", dev="8:0"),  # scsi0 LUN 2: the DVD slot
        support.Disk("sdb", None, "2:0:0:1", dev="8:16"),  # Msft, but no VMBus device above it
        support.Disk("sdc", support.DATA_SCSI1, "1:0:0:0", vendor="QEMU    ", model="QEMU HARDDISK   ",
                     dev="8:32"),
        support.Disk("nvme0n1", nvme_model="Microsoft NVMe Direct Disk", dev="259:0"),
    ])
    assert links(tmp_path, tree) == {}
