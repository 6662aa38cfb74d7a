"""Which devices may be the provisioning disc: ``/dev/sr0`` first, then the other CD-ROM drives.

A CD-ROM drive is a block device named ``sr*`` or whose SCSI device type in sysfs is 5 (CD/DVD);
an arbitrary data disk is never a candidate.  On the live system a candidate must be a block
device; in a ``--root`` tree (tests, image builds) a regular file stands in for one.  If the disc
is already mounted (udf or iso9660), its mount point is used instead of the raw device.
"""

from __future__ import annotations

import os
import re
import stat
from typing import List, Optional

from azprov.host import Host

FIRST = "/dev/sr0"
SYS_BLOCK = "/sys/class/block"
SCSI_TYPE_ROM = "5"
DISC_FILESYSTEMS = ("udf", "iso9660")


def _natural(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _is_cdrom(host: Host, name: str) -> bool:
    if name.startswith("sr"):
        return True
    kind = host.read_text(f"{SYS_BLOCK}/{name}/device/type", limit=16)
    return kind is not None and kind.strip() == SCSI_TYPE_ROM


def usable(host: Host, device: str) -> bool:
    """A block device (or, in a --root tree, a regular file) and not a symlink."""
    try:
        info = os.lstat(host.entry_path(device))
    except OSError:
        return False
    return stat.S_ISBLK(info.st_mode) or (not host.live and stat.S_ISREG(info.st_mode))


def candidates(host: Host) -> List[str]:
    """In-root device paths that may hold the provisioning disc, best first."""
    names = []
    try:
        names = sorted(os.listdir(host.real_path(SYS_BLOCK)), key=_natural)
    except OSError:
        pass
    found = [FIRST]
    for name in names:
        if re.fullmatch(r"[a-z][a-z0-9]{0,31}", name) and _is_cdrom(host, name):
            found.append(f"/dev/{name}")
    unique = list(dict.fromkeys(found))
    return [device for device in unique if usable(host, device)]


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_point(host: Host, device: str) -> Optional[str]:
    """Where ``device`` is mounted as udf or iso9660 on the live system, or None (an image tree
    has nothing mounted: ``host.probes`` is the null object there)."""
    mountinfo = host.probes.mountinfo()
    if not mountinfo:
        return None
    try:
        rdev = os.stat(host.entry_path(device)).st_rdev
    except OSError:
        return None
    return find_mount(mountinfo, rdev)


def find_mount(mountinfo: List[str], rdev: int) -> Optional[str]:
    """The mount point of device number ``rdev`` mounted as udf or iso9660 in ``mountinfo``."""
    wanted = f"{os.major(rdev)}:{os.minor(rdev)}"
    for line in mountinfo:
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5 or fields[2] != wanted:
            continue
        fstype = line.split(" - ", 1)[1].split(" ")[0]
        if fstype in DISC_FILESYSTEMS:
            return _unescape(fields[4])
    return None
