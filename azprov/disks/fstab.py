"""``/etc/fstab`` lines about disks a VM made from the image may not have.

- **Other agents' temporary-disk lines**, removed by ``azprov deprovision``: cloud-init marks
  every line it writes with ``comment=cloudconfig`` (``cc_mounts``; its default for the resource
  disk is ``/dev/disk/cloud/azure_resource-part1 /mnt auto
  defaults,nofail,x-systemd.after=cloud-init.service,_netdev,comment=cloudconfig 0 2``), and
  ``cloud-init clean -c fstab`` removes exactly those (cloud-init PR #6348, 2025); azure-vm-utils'
  ``azure-ephemeral-disk-setup`` marks its line ``comment=azure-ephemeral-disk-setup``
  (``LABEL=AzureEphmDsk``).  WALinuxAgent mounts the resource disk itself and writes no fstab
  line (azure-vm-utils' script says so when it checks for conflicts); a line naming the
  resource disk by its udev name (``/dev/disk/azure/resource*``, ``/dev/disk/cloud/azure_resource*``)
  is somebody's hand-made mount of that disk, and goes too: the disk is new, and possibly
  absent, on every VM.  azprov's own mount is never in fstab.
- **Lines that would hang or fail a boot**, flagged by ``azprov check``: a mount of the temporary
  disk or of a data disk (``/dev/disk/azure/scsiN/lunN``, a kernel name like ``/dev/sdc1``)
  without ``nofail`` makes ``local-fs.target`` require a device that a new VM may not have: the
  boot waits for it (90 s by default) and then stops in emergency mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

FSTAB = "/etc/fstab"
AGENT_MARKERS = ("comment=cloudconfig", "comment=azure-ephemeral-disk-setup")
TEMP_DISK_SPECS = re.compile(r"^(/dev/disk/azure/resource(-part\d+)?|/dev/disk/cloud/azure_resource(-part\d+)?"
                             r"|LABEL=AzureEphmDsk)$")
DATA_DISK_SPECS = re.compile(r"^(/dev/disk/azure/(scsi\d+/lun\d+|data/by-lun/\d+)(-part\d+)?"
                             r"|/dev/(sd[b-z][a-z]*|nvme\d+n\d+)(p?\d+)?)$")
SYSTEM_MOUNTS = ("/", "/boot", "/boot/efi", "/usr", "/var")


@dataclass(frozen=True)
class Entry:
    line: int  # 1-based
    text: str
    spec: str
    mount_point: str
    fstype: str
    options: Tuple[str, ...]

    @property
    def nofail(self) -> bool:
        return "nofail" in self.options or "nobootwait" in self.options


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def entries(text: str) -> List[Entry]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith("#"):
            continue
        options = tuple(fields[3].split(",")) if len(fields) > 3 else ("defaults",)
        found.append(Entry(number, line, _unescape(fields[0]), _unescape(fields[1]),
                           fields[2] if len(fields) > 2 else "auto", options))
    return found


def agent_line(entry: Entry) -> Optional[str]:
    """Which agent left this temporary-disk line, or None if it is none of theirs."""
    if "comment=cloudconfig" in entry.options:
        return "cloud-init"
    if "comment=azure-ephemeral-disk-setup" in entry.options:
        return "azure-vm-utils"
    if TEMP_DISK_SPECS.match(entry.spec):
        return "a hand-made mount of the temporary disk"
    return None


def without_agent_lines(text: str) -> Tuple[str, List[Entry]]:
    """``text`` without the other agents' temporary-disk lines, and those lines."""
    removed = [entry for entry in entries(text) if agent_line(entry)]
    drop = {entry.line for entry in removed}
    kept = [line for number, line in enumerate(text.splitlines(keepends=True), 1) if number not in drop]
    return "".join(kept), removed


def risky(text: str, mount_point: str) -> List[Tuple[Entry, str]]:
    """The lines that would hang or fail a new VM's boot, each with why."""
    found = []
    for entry in entries(text):
        who = agent_line(entry)
        if who:
            found.append((entry, f"{who}: the temporary disk is new (or absent) on every VM; azprov mounts it "
                                 "at every boot without fstab"))
        elif entry.mount_point.rstrip("/") == mount_point.rstrip("/") and entry.fstype not in ("tmpfs", "none"):
            found.append((entry, f"mounts {entry.spec} on {mount_point}, where azprov mounts the temporary disk"))
        elif (DATA_DISK_SPECS.match(entry.spec) and not entry.nofail
              and entry.mount_point not in SYSTEM_MOUNTS and entry.fstype != "swap"):
            found.append((entry, f"{entry.spec} is a disk a VM made from this image may not have, and without "
                                 "nofail the boot waits for it and then stops in emergency mode"))
        elif DATA_DISK_SPECS.match(entry.spec) and entry.fstype == "swap" and not entry.nofail:
            found.append((entry, f"swap on {entry.spec}, a disk a new VM may not have, without nofail"))
    return found
