"""``azprov temp-disk``: the VM's temporary (resource) disk made usable, at every boot.

``azprov-temp-disk.service`` runs it at every boot (the disk is replaced on redeploy, resize and
deallocation, so a first-boot step would not do):

1. nothing when ``[temp_disk] enabled = false``, or when another agent owns the disk
   (:mod:`azprov.disks.owner`: WALinuxAgent with ``ResourceDisk.Format=y``, cloud-init's fstab
   line, azure-vm-utils): exactly one of them may;
2. find the disk (:mod:`azprov.disks.sysfs`: the SCSI resource disk by its VMBus id, else the
   first NVMe temp disk), waiting up to ``wait`` seconds for it to appear;
3. leave it alone when it is in use (mounted, swap, held by device mapper or md, or busy: it is
   opened ``O_EXCL``);
4. read what it holds (:mod:`azprov.disks.layout`): the filesystem azprov made on an earlier boot
   is mounted again; Azure's fresh NTFS volume (only the data loss warning) or a blank disk is
   formatted (both ends zeroed, then ``mkfs`` on the whole disk, label ``azprov-temp``) and
   mounted; **anything else is left alone with a warning**;
5. mount it on ``mount_point`` (``mount_options``; never through ``/etc/fstab``), write the data
   loss warning on a fresh filesystem, and add a swap file when ``swap_size_mb`` is set.

The outcome of each run is kept in ``/var/lib/azprov/temp-disk.json`` for ``azprov status``.
Leaving a disk alone is a warning, not a failure (exit 0); a failed ``mkfs``, mount or swap
file is a failure (``temp_disk_failed``, exit 6: the unit shows failed).  The unit is ordered
before nothing that boot needs and has a time limit, so the boot never waits on it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from azprov.disks import layout, owner, sysfs
from azprov.disks.mounts import parse_mountinfo, swap_files
from azprov.errors import AzprovError, TempDiskFailed
from azprov.host import Host
from azprov.media.image import Image

log = logging.getLogger(__name__)

RECORD = "/var/lib/azprov/temp-disk.json"
README = "DATALOSS_WARNING_README.txt"
SWAP_FILE = "swapfile"
WARNING_TEXT = """\
WARNING: THIS IS A TEMPORARY DISK.

Azure replaces this disk with a new, empty one when the VM is redeployed, resized, deallocated or
moved to another host: anything stored here is lost and cannot be recovered. Keep nothing here
that you cannot rebuild.

azprov formatted this disk (azprov-temp-disk.service; see azprov(8), [temp_disk]).
"""
WIPE = 2 * 1024 * 1024  # bytes zeroed at the start (partition table and first partition's boot sector)
MKFS = {"ext4": ["mkfs.ext4", "-F", "-q", "-L", layout.LABEL],
        "xfs": ["mkfs.xfs", "-f", "-q", "-L", layout.LABEL]}


@dataclass(frozen=True)
class Outcome:
    outcome: str  # disabled, skipped, no-disk, left-alone, mounted, formatted, failed
    message: str
    device: Optional[str] = None
    why: Optional[str] = None  # how the device was found
    mount_point: Optional[str] = None
    swap_file: Optional[str] = None
    at: str = ""


def load_record(host: Host) -> Optional[dict]:
    try:
        data = host.read_file(RECORD, limit=64 * 1024)
        return json.loads(data) if data else None
    except (ValueError, OSError):
        return None


def _record(host: Host, outcome: Outcome) -> Outcome:
    stamped = Outcome(**{**asdict(outcome), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    try:
        host.write_file(RECORD, (json.dumps(asdict(stamped), indent=2) + "\n").encode(), mode=0o600,
                        parents=0o700)
    except OSError as exc:
        log.warning("cannot record the outcome in %s: %s", RECORD, exc)
    level = logging.WARNING if stamped.outcome in ("left-alone", "skipped", "failed") else logging.INFO
    log.log(level, "temporary disk: %s", stamped.message)
    return stamped


def find_disk(host: Host, device: Optional[str], wait: float, *,
              clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> Optional[sysfs.BlockDisk]:
    """The configured ``device`` (resolved) or the temporary disk, waiting up to ``wait`` s."""
    deadline = clock() + wait
    while True:
        if device is not None:
            name = os.path.basename(host.resolve(device))
            disk = sysfs.describe(host, name) if host.exists(f"{sysfs.SYS_BLOCK}/{name}") else None
            if disk is not None:
                disk = sysfs.BlockDisk(**{**asdict(disk), "why": f"configured as {device}"})
        else:
            disk = sysfs.temp_disk(host)
        if disk is not None or clock() >= deadline:
            return disk
        sleep(0.5)


def _in_use(host: Host, disk: sysfs.BlockDisk, mount_point: str) -> Optional[str]:
    """Why the disk is in use by something other than azprov's mount, or None."""
    numbers = set(sysfs.dev_numbers(host, disk.name))
    for mount in parse_mountinfo(host.probes.mountinfo()):
        if mount.device in numbers and mount.mount_point != mount_point:
            return f"it is mounted on {mount.mount_point}"
    held = sysfs.holders(host, disk.name)
    if held:
        return f"it is held by {', '.join(held)}"
    nodes = {f"/dev/{name}" for name in [disk.name, *sysfs.partitions(host, disk.name)]}
    active = nodes.intersection(swap_files(host.read_text("/proc/swaps") or ""))
    if active:
        return f"it is swap ({', '.join(sorted(active))})"
    return None


def _mounted_here(host: Host, disk: sysfs.BlockDisk, mount_point: str) -> Optional[bool]:
    """True if the disk is mounted on the mount point, False if something else is, else None."""
    numbers = set(sysfs.dev_numbers(host, disk.name))
    for mount in parse_mountinfo(host.probes.mountinfo()):
        if mount.mount_point == mount_point:
            return mount.device in numbers
    return None


def _open(host: Host, node: str, flags: int) -> int:
    # O_EXCL on a block device: EBUSY while it is mounted or held (the kernel's own "in use")
    return os.open(host.entry_path(node), flags | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC)


def read_verdict(host: Host, disk: sysfs.BlockDisk) -> layout.Verdict:
    try:
        fd = _open(host, disk.node, os.O_RDONLY)
    except OSError as exc:
        return layout.Verdict("unknown", f"cannot open {disk.node} for reading: {exc.strerror or exc}")
    try:
        return layout.classify(Image(fd), disk.sector)
    finally:
        os.close(fd)


def _wipe(host: Host, disk: sysfs.BlockDisk) -> None:
    """Zero both ends (the partition table and GPT backup, the first partition's boot sector),
    after reading the verdict again through the same exclusive descriptor: nothing can have
    been mounted or written in between."""
    fd = _open(host, disk.node, os.O_RDWR)
    try:
        verdict = layout.classify(Image(fd), disk.sector)
        if not verdict.may_format:
            raise TempDiskFailed(f"{disk.node} changed before it was formatted: {verdict.reason}",
                                 device=disk.node)
        size = os.lseek(fd, 0, os.SEEK_END)
        for offset, length in ((0, min(WIPE, size)), (max(size - layout.EDGE, 0), min(layout.EDGE, size))):
            os.pwrite(fd, bytes(length), offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    # the kernel drops the partitions of the old table (fails harmlessly when there were none)
    host.run(["blockdev", "--rereadpt", disk.node], timeout=30, check=False)


def _mount_point_ready(host: Host, mount_point: str) -> Optional[str]:
    """Create the mount point; why it cannot be used, or None (it must be an empty directory:
    mounting over files would hide them)."""
    try:
        with host.open_dir(mount_point, create_mode=0o755) as directory:
            names = os.listdir(directory.fd)
    except (OSError, ValueError) as exc:
        return f"cannot use {mount_point}: {exc}"
    if names:
        return f"{mount_point} is not empty ({', '.join(sorted(names)[:3])}): mounting would hide it"
    return None


def _swap(host: Host, mount_point: str, size_mb: int) -> Optional[str]:
    if size_mb <= 0:
        return None
    path = f"{mount_point.rstrip('/')}/{SWAP_FILE}"
    if path in swap_files(host.read_text("/proc/swaps") or ""):
        return path
    info = host.lstat(path)
    if info is not None and info.st_size != size_mb * 1024 * 1024:
        host.remove(path)
        info = None
    if info is None:
        with host.open_dir(mount_point) as directory:
            fd = os.open(SWAP_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=directory.fd)
            try:
                os.posix_fallocate(fd, 0, size_mb * 1024 * 1024)
            finally:
                os.close(fd)
        host.run(["mkswap", host.path(path)], timeout=120)
    host.run(["swapon", host.path(path)], timeout=120)
    return path


def run(host: Host, settings, *, dry_run: bool = False, state: Optional[Host] = None,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Set up the temporary disk as ``settings`` (``config.temp_disk``) say; the outcome is
    recorded in ``state`` (default: ``host``; tests keep it apart from the machine's devices)."""
    state = state or host
    record = (lambda outcome: outcome) if dry_run else (lambda outcome: _record(state, outcome))
    if not settings.enabled:
        return record(Outcome("disabled", "[temp_disk] enabled = false: the temporary disk is not touched"))
    others = owner.owners(host, False)
    if others:
        return record(Outcome("skipped", f"{others[0].name} owns the temporary disk ({others[0].why}); "
                              "azprov leaves it to it (to let azprov do it: "
                              f"{others[0].fix})"))
    disk = find_disk(host, settings.device, settings.wait, clock=clock, sleep=sleep)
    mount_point = settings.mount_point
    if disk is None:
        what = settings.device or "no temporary disk (no SCSI resource disk, no NVMe temp disk)"
        return record(Outcome("no-disk", f"{what} found after {settings.wait:g} s: this VM size may have none"))
    found = dict(device=disk.node, why=disk.why, mount_point=mount_point)
    busy = _in_use(host, disk, mount_point)
    if busy:
        return record(Outcome("left-alone", f"{disk.node} left alone: {busy}", **found))
    here = _mounted_here(host, disk, mount_point)
    if here is False:
        return record(Outcome("left-alone", f"{disk.node} left alone: something else is mounted on {mount_point}",
                              **found))
    if here:
        swap = None if dry_run else _swap_or_fail(host, state, mount_point, settings.swap_size_mb, disk)
        return record(Outcome("mounted", f"{disk.node} is already mounted on {mount_point}", swap_file=swap, **found))
    verdict = read_verdict(host, disk)
    if not verdict.may_format and verdict.kind != "ours":
        return record(Outcome("left-alone", f"{disk.node} left alone, azprov formats only a disk as Azure "
                              f"delivers it: {verdict.reason}", **found))
    if dry_run:
        action = "would mount" if verdict.kind == "ours" else "would format and mount"
        return Outcome("mounted" if verdict.kind == "ours" else "formatted",
                       f"{action} {disk.node} on {mount_point}: {verdict.reason}", **found)
    problem = _mount_point_ready(host, mount_point)
    if problem:
        return record(Outcome("left-alone", f"{disk.node} left unmounted: {problem}", **found))
    fstype = verdict.filesystem or settings.filesystem
    try:
        if verdict.may_format:
            log.info("formatting %s (%s) as %s: %s", disk.node, disk.why, fstype, verdict.reason)
            _wipe(host, disk)
            host.run([*MKFS[fstype], disk.node], timeout=600)
        host.run(["mount", "-t", fstype, "-o", settings.mount_options, disk.node, host.path(mount_point)],
                 timeout=120)
        if verdict.may_format:
            host.write_file(f"{mount_point.rstrip('/')}/{README}", WARNING_TEXT.encode(), mode=0o644)
    except (OSError, AzprovError) as exc:  # recorded, then raised as one failure
        raise _failed(state, disk, mount_point, str(exc)) from None
    swap = _swap_or_fail(host, state, mount_point, settings.swap_size_mb, disk)
    done = "formatted (" + fstype + ") and mounted" if verdict.may_format else "mounted"
    return record(Outcome("formatted" if verdict.may_format else "mounted",
                          f"{disk.node} {done} on {mount_point} ({verdict.reason})", swap_file=swap, **found))


def _swap_or_fail(host: Host, state: Host, mount_point: str, size_mb: int,
                  disk: sysfs.BlockDisk) -> Optional[str]:
    try:
        return _swap(host, mount_point, size_mb)
    except (OSError, AzprovError) as exc:
        raise _failed(state, disk, mount_point, f"swap file: {exc}") from None


def _failed(host: Host, disk: sysfs.BlockDisk, mount_point: str, message: str) -> TempDiskFailed:
    _record(host, Outcome("failed", f"{disk.node}: {message}", device=disk.node, why=disk.why,
                          mount_point=mount_point))
    return TempDiskFailed(f"temporary disk {disk.node}: {message}", device=disk.node)


def command(args, config, host: Host) -> int:
    """``azprov temp-disk [--dry-run] [--json]`` (what azprov-temp-disk.service runs; ``host``
    is the machine: the command has no ``--root``)."""
    outcome = run(host, config.temp_disk, dry_run=getattr(args, "dry_run", False))
    if getattr(args, "json", False):
        json.dump(asdict(outcome), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"temporary disk: {outcome.outcome}: {outcome.message}")
    return 0
