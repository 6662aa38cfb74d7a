"""The fd-relative directory walk: every path component opened with ``O_NOFOLLOW`` from an open
directory (``openat`` style), so a symlink anywhere on a path azprov writes through is refused,
whoever planted it and whenever.  :class:`Dir` does file operations relative to its descriptor."""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from typing import Callable, List, Optional, Tuple

from azprov.errors import UnsafePath, StepFailed
from azprov.host import atomic

log = logging.getLogger(__name__)

READ_LIMIT = 4 * 1024 * 1024
MAX_TREE_DEPTH = 64  # remove_tree: deeper than any agent's state directory
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def owner(uid: int, gid: int) -> Tuple[int, int]:
    """The owner azprov gives what it writes: as asked when it runs as root; unprivileged (tests,
    rootless image builds) it cannot give files away, so they stay the invoking user's."""
    return (uid, gid) if os.geteuid() == 0 else (os.geteuid(), os.getegid())


def split_path(path: str) -> List[str]:
    """The components of an absolute in-root path; ``..`` is refused (no escaping the root)."""
    if not path.startswith("/"):
        raise ValueError(f"not an absolute path: {path!r}")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"{path}: '..' is not allowed in a path azprov writes", path=path)
    return parts


def read_bounded(path: str, limit: int, *, where: Optional[str] = None, dir_fd: Optional[int] = None) -> Optional[bytes]:
    """The one bounded read: the regular file ``path`` (relative to ``dir_fd`` if given), at most
    ``limit`` bytes; None if it is absent.  Opened with ``O_NOFOLLOW`` (its last component a
    symlink: UnsafePath) and ``O_NONBLOCK`` (a FIFO is never waited on); not a regular file:
    UnsafePath; larger than ``limit``: StepFailed.  ``where`` names it in messages."""
    where = where or path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{where} is a symbolic link; azprov refuses it", path=where) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise UnsafePath(f"{where} is not a regular file", path=where)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise StepFailed(f"{where} is larger than {limit} bytes", path=where, limit=limit)
    return data


def _system_errors(method):
    """Turn an OSError of a file operation (a full disk, a read-only /etc, EACCES...) into
    StepFailed naming the path; FileNotFoundError passes, callers treat it as "absent"."""

    @functools.wraps(method)
    def wrapper(self: "Dir", *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (FileNotFoundError, StepFailed):
            raise
        except OSError as exc:
            names = [arg for arg in args if isinstance(arg, str)]
            where = self._where(names[-1]) if names else self.path
            raise StepFailed(f"cannot {method.__name__.replace('_', ' ')} {where}: {exc.strerror or exc}",
                             path=where, errno=errno.errorcode.get(exc.errno, exc.errno)) from None

    return wrapper


class Dir:
    """An open directory reached without following symlinks; file operations relative to it."""

    def __init__(self, fd: int, path: str, display: str) -> None:
        self.fd = fd
        self.path = path  # in-root path, for messages
        self.real = display  # path on this machine (root prefix included), for commands

    def __enter__(self) -> "Dir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    def _where(self, name: str) -> str:
        return self.path.rstrip("/") + "/" + name

    def lstat(self, name: str) -> Optional[os.stat_result]:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    @_system_errors
    def subdir(self, name: str, *, create_mode: Optional[int] = None,
               uid: int = 0, gid: int = 0) -> "Dir":
        """Open (or create with ``create_mode``, owned by uid:gid) the directory ``name``."""
        uid, gid = owner(uid, gid)
        created = False
        if create_mode is not None and self.lstat(name) is None:
            try:
                os.mkdir(name, 0o700, dir_fd=self.fd)
                created = True
            except FileExistsError:
                pass
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            info = self.lstat(name)
            what = "a symbolic link" if info and stat.S_ISLNK(info.st_mode) else "not a directory"
            raise UnsafePath(f"{self._where(name)} is {what}; azprov refuses to write through it",
                             path=self._where(name)) from None
        if created:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, create_mode)
            log.debug("created directory %s (%o, %d:%d)", self._where(name), create_mode, uid, gid)
        return Dir(fd, self._where(name), os.path.join(self.real, name))

    @_system_errors
    def read(self, name: str, limit: int = READ_LIMIT) -> Optional[bytes]:
        """The content of the regular file ``name`` (never through a symlink), or None if absent
        (:func:`read_bounded`)."""
        return read_bounded(name, limit, where=self._where(name), dir_fd=self.fd)

    @_system_errors
    def write(self, name: str, data: bytes, *, mode: int, uid: int = 0, gid: int = 0,
              check: Optional[Callable[[str], None]] = None) -> bool:
        """Atomically make ``name`` hold ``data`` with ``mode`` and owner; False if it already did.

        ``check(path)`` may inspect the complete temp file before it replaces ``name`` (raise to
        stop); on any failure the temp file is removed and ``name`` is untouched.
        """
        uid, gid = owner(uid, gid)
        current = self.lstat(name)
        if current is not None and stat.S_ISLNK(current.st_mode):
            raise UnsafePath(f"{self._where(name)} is a symbolic link; azprov refuses to replace it",
                             path=self._where(name))
        if current is not None and stat.S_ISREG(current.st_mode) and self.read(name) == data:
            if stat.S_IMODE(current.st_mode) == mode and (current.st_uid, current.st_gid) == (uid, gid):
                return False
            atomic.set_owner_mode(self.fd, name, mode, uid, gid)
            return True
        atomic.replace(self.fd, name, data, mode=mode, uid=uid, gid=gid, real_dir=self.real,
                       check=check)
        log.debug("wrote %s (%d bytes, %o, %d:%d)", self._where(name), len(data), mode, uid, gid)
        return True

    @_system_errors
    def remove(self, name: str) -> bool:
        """Remove the file or symlink ``name`` (not a directory); False if it was not there."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        os.fsync(self.fd)
        return True

    @_system_errors
    def remove_tree(self, name: str, depth: int = 0) -> int:
        """Remove ``name`` and, when it is a directory, everything below it, never following a
        symlink (a link is removed, not what it points to); how many entries were removed."""
        info = self.lstat(name)
        if info is None:
            return 0
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=self.fd)
            return 1
        if depth >= MAX_TREE_DEPTH:
            raise StepFailed(f"{self._where(name)} is nested deeper than {MAX_TREE_DEPTH} levels; "
                             "azprov does not remove it", path=self._where(name))
        with self.subdir(name) as child:
            removed = sum(child.remove_tree(entry, depth + 1) for entry in sorted(os.listdir(child.fd)))
        os.rmdir(name, dir_fd=self.fd)
        os.fsync(self.fd)
        return removed + 1

    def readlink(self, name: str) -> Optional[str]:
        try:
            return os.readlink(name, dir_fd=self.fd)
        except (FileNotFoundError, OSError):
            return None

    @_system_errors
    def symlink(self, target: str, name: str) -> bool:
        """Make ``name`` a symlink to ``target``; False if it already was exactly that."""
        if self.readlink(name) == target:
            return False
        self.remove(name)
        os.symlink(target, name, dir_fd=self.fd)
        os.fsync(self.fd)
        return True

    @_system_errors
    def set_owner_mode(self, mode: int, uid: int, gid: int) -> bool:
        uid, gid = owner(uid, gid)
        info = self.stat()
        if stat.S_IMODE(info.st_mode) == mode and (info.st_uid, info.st_gid) == (uid, gid):
            return False
        os.fchown(self.fd, uid, gid)
        os.fchmod(self.fd, mode)
        return True
