"""Find the provisioning disc and read ``ovf-env.xml`` from it: the one entry point of the package.

For each candidate drive (``/dev/sr0`` first): if it is mounted, read the file from the mount;
otherwise parse it in user space, UDF first (what Azure writes) then ISO9660; only if neither
reader can parse it, mount it read-only on a private directory.  A drive with no medium or a disc
without ``ovf-env.xml`` is skipped.  After a successful read the disc is ejected where the device
allows it (a failed eject is a log line).
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

from azprov.errors import AzprovError, DiscUnreadable
from azprov.host import Host
from azprov.media import discover, iso9660, udf
from azprov.media.image import DiscFormatError, Image
from azprov.media.mount import read_by_mounting, read_file_in

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscFile:
    """``ovf-env.xml`` as read from the provisioning disc, and how it was read."""

    device: str  # in-root path of the drive
    method: str  # "mounted" (an existing mount), "udf", "iso9660" or "mount"
    data: bytes = field(repr=False)


def _read_device(host: Host, device: str, mount: bool = True) -> Optional[DiscFile]:
    """``ovf-env.xml`` from the medium in ``device``: None if there is no medium or no such file."""
    mounted = discover.mount_point(host, device)
    if mounted is not None:
        log.info("provisioning disc %s is mounted at %s: reading it there", device, mounted)
        data = read_file_in(mounted)
        return DiscFile(device, "mounted", data) if data is not None else None
    try:
        fd = os.open(host.entry_path(device), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENOMEDIUM, errno.ENXIO, errno.ENOENT):
            log.info("%s: no medium", device)
            return None
        raise DiscUnreadable(f"cannot open {device}: {exc.strerror}", device=device) from None
    problems: List[str] = []
    try:
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
        except OSError as exc:
            raise DiscUnreadable(f"cannot read {device}: {exc.strerror}", device=device) from None
        if size == 0:
            log.info("%s: no medium", device)
            return None
        for name, reader in (("udf", udf), ("iso9660", iso9660)):
            try:
                data = reader.read_ovf_env(Image(fd, size))
            except DiscFormatError as exc:
                problems.append(f"{name}: {exc}")
                continue
            except OSError as exc:
                raise DiscUnreadable(f"cannot read {device}: {exc.strerror}", device=device) from None
            if data is None:
                log.info("%s: a %s disc without ovf-env.xml", device, name)
            return DiscFile(device, name, data) if data is not None else None
    finally:
        os.close(fd)
    if not mount:
        raise DiscUnreadable(f"{device} cannot be read ({'; '.join(problems)}); not mounting it",
                             device=device)
    log.warning("%s: the built-in readers cannot read it (%s); trying a read-only mount",
                device, "; ".join(problems))
    try:
        data = read_by_mounting(host, device)
    except (AzprovError, DiscFormatError, OSError) as exc:
        raise DiscUnreadable(f"{device} cannot be read ({'; '.join(problems)}) nor mounted: {exc}",
                             device=device) from None
    return DiscFile(device, "mount", data) if data is not None else None


def eject(host: Host, device: str) -> None:
    if not host.live:
        return
    result = host.run(["eject", device], timeout=30, check=False) if host.which("eject") else None
    if result is None:
        log.info("eject is not installed: leaving the provisioning disc in %s", device)
    elif result.returncode != 0:
        log.info("could not eject %s (%s): leaving it", device,
                 (result.stderr.strip() or f"status {result.returncode}")[:200])
    else:
        log.info("ejected the provisioning disc from %s", device)


def read_ovf_env(host: Host, mount: bool = True) -> Optional[DiscFile]:
    """``ovf-env.xml`` from the first drive whose disc has one, or None when no drive has it;
    ``mount=False`` never mounts (for looking only: ``azprov metadata``).

    Raises DiscUnreadable when a drive holds a disc that cannot be read at all."""
    devices = discover.candidates(host)
    if not devices:
        log.info("no CD-ROM drive: no provisioning disc")
        return None
    unreadable: Optional[DiscUnreadable] = None
    for device in devices:
        try:
            found = _read_device(host, device, mount)
        except DiscUnreadable as exc:
            log.warning("%s", exc)
            unreadable = unreadable or exc
            continue
        if found is not None:
            log.info("read ovf-env.xml (%d bytes) from %s (%s)", len(found.data), device,
                     found.method)
            return found
    if unreadable is not None:
        raise unreadable
    log.info("no provisioning disc with ovf-env.xml in %s", ", ".join(devices))
    return None
