"""The one seam to the machine: a ``Host`` rooted at a directory (``--root``, default ``/``).

- Paths name files as the system sees them (``/etc/hostname``), mapped under the root.  Writes
  walk every component from the root with ``O_NOFOLLOW`` (``openat`` style): a symlink anywhere
  on the path is refused, whoever planted it and whenever.  Configuration reads resolve symlinks
  *inside* the root, as a chroot would, so an image's absolute links never reach the build host.
- Safe writes: temp file in the same directory, owner and mode set on the descriptor, fsync, an
  optional check of the complete temp file (``visudo -cf``), rename, fsync of the directory; no
  write at all when content, owner and mode are already right.
- The root's user database (``pwd`` would read the build host's), commands (argv lists only, a
  clean environment, timeouts, output logged on failure; injectable runner), and what is running
  (systemd, SELinux, processes: only when the root is ``/``).
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import logging
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from azprov.errors import StepFailed

log = logging.getLogger(__name__)

COMMAND_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
READ_LIMIT = 4 * 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(StepFailed):
    """A path azprov must write through is a symlink, not a directory, or wrongly owned."""

    reason = "unsafe_path"


class CommandFailed(StepFailed):
    reason = "command_failed"


@dataclass(frozen=True)
class CommandResult:
    argv: Tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], float, Optional[str]], CommandResult]


def run_subprocess(argv: Sequence[str], timeout: float, input: Optional[str]) -> CommandResult:
    """The real runner: no shell, clean environment, output captured."""
    env = {"PATH": COMMAND_PATH, "LC_ALL": "C", "LANG": "C"}
    completed = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, errors="replace",
        timeout=timeout, env=env, stdin=None if input is not None else subprocess.DEVNULL,
        close_fds=True,
    )
    return CommandResult(tuple(argv), completed.returncode, completed.stdout, completed.stderr)


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: Tuple[str, ...]


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
        """The content of the regular file ``name`` (never through a symlink), or None if absent."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"{self._where(name)} is a symbolic link; azprov refuses it",
                                 path=self._where(name)) from None
            raise
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise UnsafePath(f"{self._where(name)} is not a regular file", path=self._where(name))
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise StepFailed(f"{self._where(name)} is larger than {limit} bytes", path=self._where(name))
        return data

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
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
            try:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        temp = f".{name}.azprov.tmp"  # one fixed name: runs are serialized by the lock
        try:
            os.unlink(temp, dir_fd=self.fd)  # left by a run killed at this very point
        except FileNotFoundError:
            pass
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=self.fd)
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
                check(os.path.join(self.real, temp))
            os.rename(temp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=self.fd)
            except FileNotFoundError:
                pass
            raise
        os.fsync(self.fd)
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


class Host:
    """The machine (root ``/``) or an image tree (any other root) that provisioning changes."""

    def __init__(self, root: str = "/", *, runner: Optional[Runner] = None) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise StepFailed(f"root {root} is not a directory", root=root)
        self.runner = runner or run_subprocess

    @property
    def live(self) -> bool:
        """True when the root is this running system (commands may touch running services)."""
        return self.root == "/"

    def path(self, path: str) -> str:
        """The path on this machine of the in-root absolute ``path`` (no symlink resolution)."""
        return os.path.join(self.root, *split_path(path))

    # ---------------------------------------------------------------- strict (no symlinks) access

    def open_dir(self, path: str, *, create_mode: Optional[int] = None,
                 uid: int = 0, gid: int = 0) -> Dir:
        """Open ``path`` walking from the root without following any symlink.

        With ``create_mode``, missing components are created (owned by uid:gid); otherwise a
        missing one raises FileNotFoundError.
        """
        current = Dir(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), "/", self.root)
        try:
            for part in split_path(path):
                child = current.subdir(part, create_mode=create_mode, uid=uid, gid=gid)
                current.close()
                current = child
        except BaseException:
            current.close()
            raise
        return current

    def read_file(self, path: str, limit: int = READ_LIMIT) -> Optional[bytes]:
        """The regular file at ``path``, reached without symlinks; None if it or a parent is absent."""
        parent, name = os.path.split(path)
        try:
            with self.open_dir(parent) as directory:
                return directory.read(name, limit)
        except FileNotFoundError:
            return None

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0,
                   parents: Optional[int] = None, check: Optional[Callable[[str], None]] = None) -> bool:
        """Atomic, symlink-refusing write (see :meth:`Dir.write`); ``parents``: create mode of
        missing parent directories (root-owned), else they must exist."""
        parent, name = os.path.split(path)
        try:
            directory = self.open_dir(parent, create_mode=parents)
        except FileNotFoundError:
            raise StepFailed(f"{parent} does not exist: cannot write {path}", path=path) from None
        with directory:
            return directory.write(name, data, mode=mode, uid=uid, gid=gid, check=check)

    def remove(self, path: str) -> bool:
        parent, name = os.path.split(path)
        try:
            with self.open_dir(parent) as directory:
                return directory.remove(name)
        except FileNotFoundError:
            return False

    def lexists(self, path: str) -> bool:
        return os.path.lexists(self.path(path))

    # ------------------------------------------------------- reads resolving symlinks in the root

    def resolve(self, path: str) -> str:
        """``path`` with symlinks resolved as if the root were ``/`` (absolute links stay inside)."""
        pending = [part for part in path.split("/") if part not in ("", ".")]
        done: List[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            here = os.path.join(self.root, *done, part)
            try:
                info = os.lstat(here)
            except OSError:
                return "/" + "/".join(done + [part] + pending)
            if not stat.S_ISLNK(info.st_mode):
                done.append(part)
                continue
            hops += 1
            if hops > 40:
                raise StepFailed(f"{path}: too many levels of symbolic links", path=path)
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
        return "/" + "/".join(done)

    def exists(self, path: str) -> bool:
        return os.path.exists(self.path(self.resolve(path)))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self.path(self.resolve(path)))

    def read_text(self, path: str, limit: int = READ_LIMIT) -> Optional[str]:
        """A configuration file as text (symlinks resolved inside the root); None if absent."""
        real = self.path(self.resolve(path))
        try:
            with open(real, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return None
                data = handle.read(limit + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        if len(data) > limit:
            raise StepFailed(f"{path} is larger than {limit} bytes", path=path)
        return data.decode("utf-8", errors="replace")

    def glob(self, pattern: str) -> List[str]:
        """In-root paths matching ``pattern`` (wildcards allowed in any component), sorted."""
        matches = ["/"]
        for part in [p for p in pattern.split("/") if p]:
            found = []
            for base in matches:
                if any(ch in part for ch in "*?["):
                    try:
                        names = os.listdir(self.path(self.resolve(base)))
                    except OSError:
                        continue
                    found.extend(os.path.join(base, n) for n in sorted(fnmatch.filter(names, part))
                                 if not n.startswith(".") or part.startswith("."))
                else:
                    candidate = os.path.join(base, part)
                    if os.path.lexists(self.path(self.resolve(candidate))):
                        found.append(candidate)
            matches = found
        return sorted(matches)

    # ----------------------------------------------------------------------- the user database

    def _records(self, path: str, fields: int) -> Iterator[List[str]]:
        text = self.read_text(path) or ""
        for line in text.splitlines():
            if not line or line.startswith(("#", "+", "-")):
                continue
            record = line.split(":")
            if len(record) >= fields:
                yield record

    def users(self) -> List[PasswdEntry]:
        return [PasswdEntry(r[0], int(r[2]), int(r[3]), r[5], r[6])
                for r in self._records("/etc/passwd", 7) if r[2].isdigit() and r[3].isdigit()]

    def user(self, name: str) -> Optional[PasswdEntry]:
        return next((entry for entry in self.users() if entry.name == name), None)

    def groups(self) -> List[GroupEntry]:
        return [GroupEntry(r[0], int(r[2]), tuple(m for m in r[3].split(",") if m))
                for r in self._records("/etc/group", 4) if r[2].isdigit()]

    def group(self, name: str) -> Optional[GroupEntry]:
        return next((entry for entry in self.groups() if entry.name == name), None)

    def password_field(self, name: str) -> Optional[str]:
        """The user's hash field in ``/etc/shadow`` (``!...`` when locked), None if no entry."""
        for r in self._records("/etc/shadow", 2):
            if r[0] == name:
                return r[1]
        return None

    def login_defs(self) -> Dict[str, str]:
        values: Dict[str, str] = {}
        for line in (self.read_text("/etc/login.defs") or "").splitlines():
            words = line.split()
            if len(words) >= 2 and not words[0].startswith("#"):
                values[words[0]] = words[1]
        return values

    def uid_min(self) -> int:
        value = self.login_defs().get("UID_MIN", "1000")
        return int(value) if value.isdigit() else 1000

    # ------------------------------------------------------------------------------- commands

    def which(self, name: str) -> Optional[str]:
        """A tool of *this* machine (tools act on the root through flags like ``--root``)."""
        return shutil.which(name, path=COMMAND_PATH)

    def root_option(self, flag: str = "--root") -> List[str]:
        """``[flag, root]`` for tools that can work on an image tree; nothing when live."""
        return [] if self.live else [flag, self.root]

    def run(self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
            input: Optional[str] = None) -> CommandResult:
        """Run ``argv`` (never through a shell); raise CommandFailed unless it succeeds or not ``check``."""
        argv = [str(arg) for arg in argv]
        log.debug("running %s", " ".join(argv))
        try:
            result = self.runner(argv, timeout, input)
        except FileNotFoundError:
            raise CommandFailed(f"{argv[0]} is not installed", command=os.path.basename(argv[0])) from None
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"{os.path.basename(argv[0])} did not finish within {timeout:g} s",
                                command=os.path.basename(argv[0])) from None
        if result.returncode != 0 and check:
            output = (result.stderr.strip() or result.stdout.strip())[-2000:]
            log.warning("%s failed with status %d: %s", " ".join(argv), result.returncode,
                        output or "(no output)")
            last = output.splitlines()[-1] if output else ""
            raise CommandFailed(
                f"{os.path.basename(argv[0])} failed with status {result.returncode}"
                + (f": {last[:200]}" if last else ""),
                command=os.path.basename(argv[0]), status=result.returncode,
            )
        return result

    # ---------------------------------------------------------------- the running system (live)

    def systemd_running(self) -> bool:
        return self.live and os.path.isdir("/run/systemd/system")

    def selinux_enabled(self) -> bool:
        return self.live and os.path.exists("/sys/fs/selinux/enforce")

    def running_processes(self, name: str) -> List[Tuple[int, List[str]]]:
        """``(pid, argv)`` of the live processes whose command name is ``name``."""
        if not self.live:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/comm") as handle:
                    if handle.read().strip() != name:
                        continue
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    argv = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
            except OSError:
                continue
            found.append((int(entry), argv))
        return found
