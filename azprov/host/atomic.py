"""Atomic file replacement relative to an open directory: temp file in the same directory, owner
and mode set on the descriptor, fsync, an optional check of the complete temp file (``visudo
-cf``), rename, fsync of the directory.  Never follows a symlink."""

from __future__ import annotations

import os
from typing import Callable, Optional


def set_owner_mode(dir_fd: int, name: str, mode: int, uid: int, gid: int) -> None:
    """Give the existing regular file ``name`` this owner and mode (content unchanged)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(dir_fd: int, name: str, data: bytes, *, mode: int, uid: int, gid: int, real_dir: str,
            check: Optional[Callable[[str], None]] = None) -> None:
    """Make ``name`` hold ``data`` with ``mode`` and owner, atomically.

    ``check(path)`` may inspect the complete temp file (``real_dir`` is the directory's path on
    this machine) before it replaces ``name``; on any failure the temp file is removed and
    ``name`` is untouched.
    """
    temp = f".{name}.azprov.tmp"  # one fixed name: runs are serialized by the lock
    try:
        os.unlink(temp, dir_fd=dir_fd)  # left by a run killed at this very point
    except FileNotFoundError:
        pass
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if check is not None:
            check(os.path.join(real_dir, temp))
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise
    os.fsync(dir_fd)
