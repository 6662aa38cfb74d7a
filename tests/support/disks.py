"""Disks as Azure delivers them, and ``/sys`` trees as a Hyper-V guest's kernel shows them.

- :func:`azure_disk` writes a disk image the way Azure delivers the temporary disk: a DOS
  partition table (or a GPT with the Microsoft reserved partition first, as on disks over 2 TB)
  with one NTFS partition made by ntfs-3g's ``mkntfs``, labelled "Temporary Storage", holding
  ``DATALOSS_WARNING_README.txt`` (copied in with ntfs-3g's ``ntfscp``, no mount needed) and any
  extra files asked for.  Directories need ntfs-3g's FUSE driver (:func:`fuse_ok`).
- :func:`loop` attaches an image as a loop device for the real format/mount tests.
- :func:`sys_tree` records the ``/sys`` a guest sees for its disks, built from the facts in
  :mod:`azprov.disks.sysfs` (VMBus device directories named by device id with their
  ``device_id``/``class_id`` files, SCSI host/target/``H:C:T:L`` directories below them, the
  block device with ``size``, ``dev``, ``queue/logical_block_size``, partitions, and the
  ``/sys/class/block`` links), so detection and the udev rules are tested without Hyper-V.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
MIB = 1024 * 1024
README = b"WARNING: THIS IS A TEMPORARY DISK.\n\nAny data stored on this drive is SUBJECT TO LOSS.\n"
GPT_MS_RESERVED = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
GPT_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
IDE_CLASS = "{32412632-86cb-44a2-9b5c-50d1417354f5}"
SCSI_CLASS = "{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}"


def need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool, path=CLEAN_ENV["PATH"]) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def run(*argv: str, input: Optional[bytes] = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, input=input, capture_output=True, env=CLEAN_ENV, timeout=120)
    assert result.returncode == 0, (argv, result.stderr.decode(errors="replace"))
    return result


def fuse_ok() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/fuse") and shutil.which("ntfs-3g") is not None


def ntfs_volume(path: Path, size: int, *, label: str = "Temporary Storage", readme: bool = True,
                files: Optional[Dict[str, bytes]] = None, dirs: List[str] = (), start_sector: int = 2048) -> None:
    """An NTFS volume image of ``size`` bytes at ``path`` (``dirs`` need FUSE)."""
    need("mkntfs", "ntfscp")
    with open(path, "wb") as handle:
        handle.truncate(size)
    run("mkntfs", "-F", "-Q", "-q", "-L", label, "-p", str(start_sector), str(path))
    content = dict(files or {})
    if readme:
        content = {"DATALOSS_WARNING_README.txt": README, **content}
    if dirs:
        mount = path.with_suffix(".mnt")
        mount.mkdir()
        run("ntfs-3g", str(path), str(mount))
        try:
            for name in dirs:
                (mount / name).mkdir()
            for name, data in content.items():
                (mount / name).write_bytes(data)
        finally:
            run("umount", str(mount))
            mount.rmdir()
        return
    for name, data in content.items():
        source = path.with_name(path.name + ".src")
        source.write_bytes(data)
        run("ntfscp", "-f", str(path), str(source), name)
        source.unlink()


def azure_disk(path: Path, size: int = 64 * MIB, *, gpt: bool = False, **volume) -> Path:
    """A disk image as Azure delivers the temporary disk (see the module docstring)."""
    need("sfdisk")
    with open(path, "wb") as handle:
        handle.truncate(size)
    if gpt:
        table = (f"label: gpt\nstart=2048, size=32768, type={GPT_MS_RESERVED}\n"
                 f"start=34816, type={GPT_BASIC_DATA}\n")
        start = 34816
    else:
        table, start = "label: dos\nstart=2048, type=7\n", 2048
    run("sfdisk", "-q", str(path), input=table.encode())
    # the partition ends where sfdisk ended it: 1 MiB (GPT: 33 sectors) before the end
    end = size - (33 * 512 if gpt else 0)
    part = path.with_name(path.name + ".part")
    ntfs_volume(part, end - start * 512, start_sector=start, **volume)
    with open(part, "rb") as source, open(path, "r+b") as disk:
        disk.seek(start * 512)
        shutil.copyfileobj(source, disk)
    part.unlink()
    return path


@contextmanager
def loop(image: Path) -> Iterator[str]:
    need("losetup")
    device = run("losetup", "-f", "--show", str(image)).stdout.decode().strip()
    try:
        yield device
    finally:
        subprocess.run(["umount", "-l", device], capture_output=True, env=CLEAN_ENV, timeout=60)
        subprocess.run(["losetup", "-d", device], capture_output=True, env=CLEAN_ENV, timeout=60)


# -------------------------------------------------------------------------------- /sys trees


@dataclass
class Disk:
    name: str  # sda, nvme0n1
    vmbus: Optional[str] = None  # the VMBus device id (without braces), None for NVMe / others
    hctl: str = "0:0:0:0"
    vendor: str = "Msft    "
    model: str = "Virtual Disk    "
    size_sectors: int = 2 * 1024 * 1024
    partitions: int = 0
    dev: str = "8:0"
    ide: bool = False  # the VMBus device is an IDE controller (generation 1 OS and resource disks)
    nvme_model: Optional[str] = None


@dataclass
class SysTree:
    root: Path
    disks: List[Disk] = field(default_factory=list)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(os.path.relpath(target, link.parent))


def _write_link(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _device(sys: Path, path: Path, subsystem: str, uevent: str = "") -> None:
    """What makes a directory a device to udev: its ``uevent`` file and ``subsystem`` link."""
    _write(path / "uevent", uevent)
    _link(path / "subsystem", sys / ("class" if subsystem == "block" else "bus") / subsystem)


def sys_tree(root: Path, disks: List[Disk]) -> SysTree:
    """Record ``disks`` as ``root/sys`` (see the module docstring)."""
    sys = root / "sys"
    vmbus = sys / "devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00"
    for index, disk in enumerate(disks):
        if disk.nvme_model is not None:
            controller = sys / f"devices/pci0000:00/0000:00:0{index}.0/nvme/{disk.name.split('n1')[0]}"
            _write(controller / "model", disk.nvme_model.ljust(40) + "\n")
            _device(sys, controller, "nvme")
            block = controller / disk.name
            _write_link(block / "device", f"../../{controller.name}")  # as the kernel writes it
        else:
            if disk.vmbus is not None:
                parent = vmbus / disk.vmbus
                _write(parent / "device_id", "{" + disk.vmbus + "}\n")
                _write(parent / "class_id", (IDE_CLASS if disk.ide else SCSI_CLASS) + "\n")
                _device(sys, parent, "vmbus")
            else:
                parent = sys / "devices/pci0000:00/0000:00:10.0/virtio5"
                _device(sys, parent, "virtio")
            host, channel, target, _lun = disk.hctl.split(":")
            scsi = parent / f"host{host}/target{host}:{channel}:{target}/{disk.hctl}"
            _device(sys, scsi.parent.parent, "scsi", "DEVTYPE=scsi_host\n")
            _device(sys, scsi.parent, "scsi", "DEVTYPE=scsi_target\n")
            _device(sys, scsi, "scsi", "DEVTYPE=scsi_device\n")
            _write(scsi / "vendor", disk.vendor + "\n")
            _write(scsi / "model", disk.model + "\n")
            block = scsi / "block" / disk.name
            _write_link(block / "device", f"../../../{disk.hctl}")  # as the kernel writes it
        major, minor = disk.dev.split(":")
        _device(sys, block, "block", f"MAJOR={major}\nMINOR={minor}\nDEVNAME={disk.name}\nDEVTYPE=disk\n")
        _write(block / "size", f"{disk.size_sectors}\n")
        _write(block / "dev", f"{disk.dev}\n")
        _write(block / "queue/logical_block_size", "512\n")
        (block / "holders").mkdir(parents=True, exist_ok=True)
        _link(sys / "class/block" / disk.name, block)
        for number in range(1, disk.partitions + 1):
            name = f"{disk.name}p{number}" if disk.name[-1].isdigit() else f"{disk.name}{number}"
            part = block / name
            _device(sys, part, "block", f"MAJOR={major}\nMINOR={int(minor) + number}\nDEVNAME={name}\n"
                                        f"DEVTYPE=partition\nPARTN={number}\n")
            _write(part / "partition", f"{number}\n")
            _write(part / "dev", f"{major}:{int(minor) + number}\n")
            _write(part / "size", "2048\n")
            (part / "holders").mkdir(parents=True, exist_ok=True)
            _link(sys / "class/block" / name, part)
    return SysTree(root, disks)


GEN1_ROOT_ID = "00000000-0000-8899-0000-000000000000"
GEN1_RESOURCE_ID = "00000000-0001-8899-0000-000000000000"
GEN2_SCSI0 = "f8b3781a-1e82-4818-a1c3-63d806ec15bb"
DATA_SCSI1 = "f8b3781b-1e82-4818-a1c3-63d806ec15bb"


def gen1(root: Path) -> SysTree:
    """A generation 1 VM: OS and resource disks on VMBus IDE devices, two data disks on scsi1."""
    return sys_tree(root, [
        Disk("sda", GEN1_ROOT_ID, "2:0:0:0", ide=True, partitions=2, dev="8:0"),
        Disk("sdb", GEN1_RESOURCE_ID, "3:0:1:0", ide=True, partitions=1, dev="8:16"),
        Disk("sdc", DATA_SCSI1, "5:0:0:0", dev="8:32"),
        Disk("sdd", DATA_SCSI1, "5:0:0:7", partitions=1, dev="8:48"),
    ])


def gen2(root: Path) -> SysTree:
    """A generation 2 VM: OS disk at LUN 0 and resource disk at LUN 1 of scsi0, a data disk on scsi1."""
    return sys_tree(root, [
        Disk("sda", GEN2_SCSI0, "0:0:0:0", partitions=3, dev="8:0"),
        Disk("sdb", GEN2_SCSI0, "0:0:0:1", partitions=1, dev="8:16"),
        Disk("sdc", DATA_SCSI1, "1:0:0:2", dev="8:32"),
    ])


def nvme(root: Path) -> SysTree:
    """A newer size: remote NVMe OS disk, two local NVMe temp disks, no SCSI resource disk."""
    return sys_tree(root, [
        Disk("nvme0n1", nvme_model="MSFT NVMe Accelerator v1.0", partitions=2, dev="259:0"),
        Disk("nvme2n1", nvme_model="Microsoft NVMe Direct Disk v2", dev="259:8"),
        Disk("nvme1n1", nvme_model="Microsoft NVMe Direct Disk v2", dev="259:4"),
    ])
