"""The last resort: mount the disc read-only on a private directory, read ``ovf-env.xml``, unmount.

Used only when the user-space readers cannot parse the disc.  The mount point is a fresh 0700
directory under ``/run/azprov`` (nobody else can reach it or race on it), the mount is
``ro,nosuid,nodev,noexec``, and every command goes through the Host's runner.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
from typing import Optional

from azprov.host import Host
from azprov.media.image import MAX_FILE_BYTES, DiscFormatError

log = logging.getLogger(__name__)

RUN_DIR = "/run/azprov"
OVF_NAME = "ovf-env.xml"


def read_file_in(directory: str, name: str = OVF_NAME) -> Optional[bytes]:
    """The regular file ``name`` in ``directory`` (no symlink), at most MAX_FILE_BYTES; None if absent."""
    try:
        fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DiscFormatError(f"{name} on the disc is a symbolic link") from None
        raise DiscFormatError(f"cannot open {name} on the disc: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise DiscFormatError(f"{name} on the disc is not a regular file")
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise DiscFormatError(f"{name} on the disc is over {MAX_FILE_BYTES} bytes")
    return data


def read_by_mounting(host: Host, device: str) -> Optional[bytes]:
    """``ovf-env.xml`` read through a temporary read-only mount of ``device`` (in-root path)."""
    run_dir = host.real_path(RUN_DIR)
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    target = tempfile.mkdtemp(prefix="disc.", dir=run_dir)  # 0700, a fresh name
    try:
        host.run(["mount", "-o", "ro,nosuid,nodev,noexec", "-t", "udf,iso9660",
                  host.entry_path(device), target], timeout=30)
        try:
            return read_file_in(target)
        finally:
            result = host.run(["umount", target], timeout=30, check=False)
            if result.returncode != 0:
                log.warning("could not unmount the provisioning disc from %s: %s", target,
                            result.stderr.strip()[:200])
    finally:
        try:
            os.rmdir(target)
        except OSError as exc:
            log.warning("could not remove %s: %s", target, exc.strerror)
