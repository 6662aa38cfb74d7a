"""Which block device is which Azure disk, from ``/sys`` alone (read through a ``Host``, so the
tests use recorded trees).

The facts, as WALinuxAgent, cloud-init and azure-vm-utils apply them:

- Azure's SCSI disks are synthetic Hyper-V storage devices on VMBus: their SCSI ``vendor`` is
  ``Msft`` and their ``model`` ``Virtual Disk`` (udev's ``ID_VENDOR=Msft``,
  ``ID_MODEL=Virtual_Disk``; WALinuxAgent ``config/66-azure-storage.rules``, cloud-init
  ``udev/66-azure-ephemeral.rules``).
- Each VMBus device is a directory with a ``device_id`` file (``{GUID}``) above the disk in the
  device tree (``/sys/bus/vmbus/devices/<id>/device_id``; WALinuxAgent's
  ``osutil/default.py`` ``_enumerate_device_id``).  Its ``class_id`` is the storage class
  (Linux ``include/linux/hyperv.h``: ``HV_IDE_GUID`` {32412632-86cb-44a2-9b5c-50d1417354f5},
  ``HV_SCSI_GUID`` {ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}); the ``device_id`` says which disk.
- Generation 1 VMs: the OS disk's device id starts ``00000000-0000-``, the resource disk's
  ``00000000-0001-`` (``{00000000-0001-8899-0000-000000000000}``; WALinuxAgent's
  ``device_for_ide_port(1)`` and its FreeBSD comment, the ``?00000000-0001-*`` udev match).
- Generation 2 VMs: the OS and resource disks share the SCSI controller
  ``{f8b3781a-1e82-4818-a1c3-63d806ec15bb}`` ("scsi0"): LUN 0 is the OS disk, LUN 1 the resource
  disk, LUN 2 the DVD (WALinuxAgent ``GEN2_DEVICE_ID`` and ``search_for_resource_disk``).
  Data disks are on ``{f8b3781b-...}`` ("scsi1"), with ``f8b3781c``/``f8b3781d`` as scsi2/scsi3.
- The LUN is the last field of the SCSI address ``H:C:T:L`` the disk's ``device`` link names
  (``readlink /sys/class/block/sdX/device | cut -d: -f4`` in the udev rules).
- NVMe temporary disks (newer sizes) are namespaces whose controller's ``model`` is
  ``Microsoft NVMe Direct Disk`` or ``Microsoft NVMe Direct Disk v2``; remote OS and data disks
  are ``MSFT NVMe Accelerator v1.0`` (azure-vm-utils ``udev/80-azure-disk.rules``,
  ``azure-ephemeral-disk-setup``).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from typing import List, Optional

from azprov.host import Host

SYS_BLOCK = "/sys/class/block"
GEN2_SCSI0 = "{f8b3781a-1e82-4818-a1c3-63d806ec15bb}"
DATA_CONTROLLERS = {
    "{f8b3781b-1e82-4818-a1c3-63d806ec15bb}": "scsi1",
    "{f8b3781c-1e82-4818-a1c3-63d806ec15bb}": "scsi2",
    "{f8b3781d-1e82-4818-a1c3-63d806ec15bb}": "scsi3",
}
GEN1_ROOT = "{00000000-0000-*"
GEN1_RESOURCE = "{00000000-0001-*"
NVME_TEMP_MODELS = ("Microsoft NVMe Direct Disk", "Microsoft NVMe Direct Disk v2")


@dataclass(frozen=True)
class BlockDisk:
    name: str  # sdb, nvme0n1
    role: str  # root, resource, data, nvme-temp, other
    device_id: Optional[str]  # the VMBus device id above it
    lun: Optional[int]
    controller: Optional[str]  # scsi0..scsi3 (Gen2) for the role's name
    size: int  # bytes
    sector: int  # logical block size
    why: str  # the fact that gave the role

    @property
    def node(self) -> str:
        return f"/dev/{self.name}"


def _attr(host: Host, path: str) -> Optional[str]:
    text = host.read_text(path, limit=4096)
    return text.strip() if text is not None else None


def _vmbus_device_id(host: Host, device_dir: str) -> Optional[str]:
    """The ``device_id`` of the nearest VMBus device above ``device_dir`` (a resolved path)."""
    path = device_dir
    while path not in ("/", ""):
        value = _attr(host, f"{path}/device_id")
        if value and value.startswith("{"):
            return value.lower()
        path = os.path.dirname(path)
    return None


def _lun(host: Host, block: str) -> Optional[int]:
    target = os.path.basename(host.resolve(f"{block}/device"))
    fields = target.split(":")
    return int(fields[3]) if len(fields) == 4 and fields[3].isdigit() else None


def describe(host: Host, name: str) -> BlockDisk:
    block = f"{SYS_BLOCK}/{name}"
    size = int(_attr(host, f"{block}/size") or 0) * 512  # always 512-byte units in sysfs
    sector = int(_attr(host, f"{block}/queue/logical_block_size") or 512)
    if name.startswith("nvme"):
        model = _attr(host, f"{block}/device/model")
        role, why = ("nvme-temp", f"NVMe model {model!r}") if model in NVME_TEMP_MODELS else ("other", f"NVMe model {model!r}")
        return BlockDisk(name, role, None, None, None, size, sector, why)
    vendor, model = _attr(host, f"{block}/device/vendor"), _attr(host, f"{block}/device/model")
    if (vendor, model) != ("Msft", "Virtual Disk"):
        return BlockDisk(name, "other", None, None, None, size, sector, f"vendor {vendor!r}, model {model!r}")
    device_id = _vmbus_device_id(host, host.resolve(block))
    lun = _lun(host, block)
    role, controller, why = "other", None, f"VMBus device {device_id}"
    if device_id is None:
        why = "no VMBus device above it"
    elif fnmatch.fnmatch(device_id, GEN1_ROOT):
        role, why = "root", f"Gen1 OS disk (VMBus device {device_id})"
    elif fnmatch.fnmatch(device_id, GEN1_RESOURCE):
        role, why = "resource", f"Gen1 resource disk (VMBus device {device_id})"
    elif device_id == GEN2_SCSI0:
        controller = "scsi0"
        if lun in (0, 1):
            role = "root" if lun == 0 else "resource"
            why = f"Gen2 {'OS' if lun == 0 else 'resource'} disk (SCSI controller {device_id}, LUN {lun})"
    elif device_id in DATA_CONTROLLERS:
        controller, role = DATA_CONTROLLERS[device_id], "data"
        why = f"data disk (SCSI controller {device_id}, LUN {lun})"
    return BlockDisk(name, role, device_id, lun, controller, size, sector, why)


def disks(host: Host) -> List[BlockDisk]:
    """Every whole disk under ``/sys/class/block`` (partitions left out), by name."""
    found = []
    for path in host.glob(f"{SYS_BLOCK}/*"):
        name = os.path.basename(path)
        if host.exists(f"{path}/partition") or name.startswith(("loop", "ram", "dm-", "md", "sr", "zram")):
            continue
        found.append(describe(host, name))
    return found


def temp_disk(host: Host) -> Optional[BlockDisk]:
    """The temporary disk: the SCSI resource disk, else the first NVMe temp disk by name (a VM
    size with several NVMe temp disks gets only the first one set up)."""
    found = disks(host)
    resource = [disk for disk in found if disk.role == "resource"]
    if resource:
        return resource[0]
    nvme = sorted((disk for disk in found if disk.role == "nvme-temp"), key=lambda d: (len(d.name), d.name))
    return nvme[0] if nvme else None


def partitions(host: Host, name: str) -> List[str]:
    """The partition names of disk ``name`` (``sdb1``...)."""
    return [os.path.basename(p) for p in host.glob(f"{SYS_BLOCK}/{name}/{name}*")
            if host.exists(f"{p}/partition")]


def holders(host: Host, name: str) -> List[str]:
    """What holds the disk or one of its partitions (device mapper, md): then it is in use."""
    found = []
    for part in [name, *partitions(host, name)]:
        base = f"{SYS_BLOCK}/{name}" + (f"/{part}" if part != name else "")
        found.extend(os.path.basename(p) for p in host.glob(f"{base}/holders/*"))
    return found


def dev_numbers(host: Host, name: str) -> List[str]:
    """``major:minor`` of the disk and its partitions (to find them in the mount table)."""
    numbers = []
    for part in [name, *partitions(host, name)]:
        base = f"{SYS_BLOCK}/{name}" + (f"/{part}" if part != name else "")
        value = _attr(host, f"{base}/dev")
        if value:
            numbers.append(value)
    return numbers
