"""The one seam to the machine: a ``Host`` rooted at a directory (``--root``, default ``/``).

- Paths name files as the system sees them (``/etc/hostname``), mapped under the root.  Writes
  walk every component from the root with ``O_NOFOLLOW`` (:mod:`azprov.host.walk`): a symlink
  anywhere on the path is refused, whoever planted it and whenever.  Configuration reads resolve
  symlinks *inside* the root, as a chroot would, so an image's absolute links never reach the
  build host.
- Safe writes (:mod:`azprov.host.atomic`): temp file in the same directory, owner and mode set on
  the descriptor, fsync, an optional check of the complete temp file (``visudo -cf``), rename,
  fsync of the directory; no write at all when content, owner and mode are already right.
- The root's user database (:mod:`azprov.host.accounts`; ``pwd`` would read the build host's),
  commands (:mod:`azprov.host.runner`: argv lists only, a clean environment, timeouts, output
  logged on failure; injectable runner), and what is running (:mod:`azprov.host.probes`: systemd,
  SELinux, processes, the kernel; an image tree gets the "not live" null object).

Callers import everything from ``azprov.host``; the submodules are its parts, not separate seams.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

from azprov.errors import StepFailed
from azprov.host import runner as _runner
from azprov.host.probes import NOT_LIVE, LiveProbes, NoProbes
from azprov.host.runner import COMMAND_PATH, CommandFailed, CommandResult, Runner, run_subprocess
from azprov.host.walk import READ_LIMIT, Dir, UnsafePath, owner, read_bounded, split_path

__all__ = [
    "COMMAND_PATH", "NO_UID", "READ_LIMIT", "Accounts", "CommandFailed", "check_dir", "inside", "CommandResult", "Dir", "GroupEntry", "Host",
    "PasswdEntry", "Runner", "UnsafePath", "owner", "read_bounded", "run_subprocess", "split_path",
]

if TYPE_CHECKING:
    from azprov.host import sshd_config
    from azprov.host.accounts import Accounts, GroupEntry, PasswdEntry
    from azprov.host.homes import NO_UID, check_dir, inside

# The parts a command may not need (user database, home directories, sshd's configuration) are
# imported on first use: ``azprov report-ready`` reads two files and writes one (issue 23).
_LAZY = {"Accounts": "accounts", "GroupEntry": "accounts", "PasswdEntry": "accounts",
         "NO_UID": "homes", "check_dir": "homes", "inside": "homes"}


def __getattr__(name: str):
    """``from azprov.host import PasswdEntry`` and the like, importing their part on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"azprov.host.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Host:
    """The machine (root ``/``) or an image tree (any other root) that provisioning changes."""

    def __init__(self, root: str = "/", *, runner: Optional[Runner] = None,
                 probes: Optional[NoProbes] = None) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise StepFailed(f"root {root} is not a directory", root=root)
        self.runner = runner or run_subprocess
        self.probes = probes if probes is not None else LiveProbes() if self.root == "/" else NOT_LIVE
        self._sshd: Optional[sshd_config.SshdFiles] = None
        self._accounts: Optional[Accounts] = None

    @property
    def accounts(self) -> Accounts:
        """The root's users, groups and login.defs (:mod:`azprov.host.accounts`), made on first use."""
        if self._accounts is None:
            from azprov.host.accounts import Accounts

            self._accounts = Accounts(self.read_text)
        return self._accounts

    @property
    def live(self) -> bool:
        """True when the root is this running system (commands may touch running services)."""
        return self.probes.live

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

    def read(self, path: str, *, follow: bool, limit: int = READ_LIMIT) -> Optional[bytes]:
        """The regular file at ``path``, at most ``limit`` bytes; None if it or a parent is absent.

        The one read of the machine's files, with its policy said at each call: ``follow=False``
        for the files azprov keeps and writes (a symlink anywhere on the path: UnsafePath, as
        :meth:`write_file`); ``follow=True`` for what an image has (symlinks resolved inside the
        root, an absolute one never reaching the build host).  Either way not a regular file (a
        FIFO is never waited on): UnsafePath; larger than ``limit``: StepFailed
        (:func:`azprov.host.walk.read_bounded`)."""
        if follow:
            return read_bounded(self.real_path(path), limit, where=path)
        parent, name = os.path.split(path)
        try:
            with self.open_dir(parent) as directory:
                return directory.read(name, limit)
        except FileNotFoundError:
            return None

    def read_file(self, path: str, limit: int = READ_LIMIT) -> Optional[bytes]:
        """A file azprov keeps: :meth:`read` with ``follow=False``."""
        return self.read(path, follow=False, limit=limit)

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0,
                   parents: Optional[int] = None, check: Optional[Callable[[str], None]] = None) -> bool:
        """Atomic, symlink-refusing write (see :meth:`Dir.write`); ``parents``: create mode of
        missing parent directories (root-owned), else they must exist."""
        parent, name = os.path.split(path)
        try:
            directory = self.open_dir(parent, create_mode=parents)
        except FileNotFoundError:
            raise StepFailed(f"{parent} does not exist: cannot write {path}", path=path) from None
        self._written(path)
        with directory:
            return directory.write(name, data, mode=mode, uid=uid, gid=gid, check=check)

    def remove(self, path: str) -> bool:
        parent, name = os.path.split(path)
        self._written(path)
        try:
            with self.open_dir(parent) as directory:
                return directory.remove(name)
        except FileNotFoundError:
            return False

    def _written(self, path: str) -> None:
        """Forget what was read of ``path`` (sshd's configuration is kept between reads)."""
        if self._sshd is not None and self._sshd.covers(path):
            self._sshd = None

    def remove_tree(self, path: str) -> int:
        """Remove ``path`` and everything below it without following a symlink (a link is
        removed itself); how many entries were removed (0: absent)."""
        parent, name = os.path.split(path.rstrip("/"))
        self._written(path)
        try:
            with self.open_dir(parent) as directory:
                return directory.remove_tree(name)
        except FileNotFoundError:
            return 0

    def lstat(self, path: str) -> Optional[os.stat_result]:
        """``lstat`` of ``path`` reached without following symlinks; None if it or a parent is
        absent (UnsafePath if a parent is a symlink)."""
        parent, name = os.path.split(path)
        try:
            with self.open_dir(parent) as directory:
                return directory.lstat(name) if name else directory.stat()
        except FileNotFoundError:
            return None

    def check_writable(self, path: str, *, parents_only: bool = False) -> None:
        """Refuse now what :meth:`write_file` would refuse later: a symlink or a non-directory
        on the way to ``path``, or ``path`` itself not a regular file (unless ``parents_only``:
        a link azprov replaces or removes).  Missing parts are fine."""
        parent, name = os.path.split(path)
        current = self.open_dir("/")
        try:
            for part in split_path(parent):
                if current.lstat(part) is None:
                    return
                child = current.subdir(part)
                current.close()
                current = child
            info = None if parents_only else current.lstat(name)
            if info is not None and not stat.S_ISREG(info.st_mode):
                what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
                raise UnsafePath(f"{path} is {what}; azprov refuses to replace it", path=path)
        finally:
            current.close()

    def lexists(self, path: str) -> bool:
        """Whether ``path`` itself (a dangling link too) is there; its parents resolve in the root."""
        return os.path.lexists(self.entry_path(path))

    # ------------------------------------------------------------ files of one account (sshd's way)

    def open_account_dir(self, account: PasswdEntry, path: str, *,
                         create: bool) -> Tuple[Optional[Dir], List[str]]:
        """The directory holding ``path``, a file sshd reads for ``account`` (see
        :func:`azprov.host.homes.open_parent`), and the directories created on the way."""
        from azprov.host import homes

        with self.open_dir("/") as root:
            return homes.open_parent(root, account, path, create=create)

    def check_account_file(self, account: PasswdEntry, path: str) -> None:
        """Refuse, without changing anything, what :meth:`update_account_file` would refuse."""
        directory, _ = self.open_account_dir(account, path, create=False)
        if directory is not None:
            from azprov.host import homes

            with directory:
                homes.check_file(directory, os.path.basename(path), account)

    def update_account_file(self, account: PasswdEntry, path: str,
                            update: Callable[[Optional[bytes]], bytes], *,
                            mode: int = 0o600) -> Tuple[bool, List[str]]:
        """Make ``path`` hold ``update(current content or None)``, owned by ``account`` with
        ``mode``, creating missing directories the account's way; ``(changed, created dirs)``."""
        from azprov.host import homes

        directory, created = self.open_account_dir(account, path, create=True)
        name = os.path.basename(path)
        with directory:
            homes.check_file(directory, name, account)
            data = update(directory.read(name))
            changed = directory.write(name, data, mode=mode, uid=account.uid, gid=account.gid)
        return changed or bool(created), created

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

    def real_path(self, path: str) -> str:
        """Where ``path`` is on this machine, symlinks resolved inside the root: what a read that
        must not leave an image tree opens (with ``O_NOFOLLOW``, against a late swap)."""
        return self.path(self.resolve(path))

    def entry_path(self, path: str) -> str:
        """Where ``path`` itself is on this machine: its parents resolved inside the root, its last
        component not followed.  For ``lstat``, ``readlink`` and ``O_NOFOLLOW`` opens of an entry
        that may itself be a link (a device, a unit link, a lock)."""
        parent, name = os.path.split(path.rstrip("/") or "/")
        return os.path.join(self.real_path(parent), name) if name else self.real_path(parent)

    def is_link(self, path: str) -> bool:
        """Whether ``path`` itself is a symbolic link (its parents resolved inside the root)."""
        return os.path.islink(self.entry_path(path))

    def link_target(self, path: str) -> Optional[str]:
        """What the symbolic link at ``path`` points to, as written; None if it is not a link."""
        return os.readlink(self.entry_path(path)) if self.is_link(path) else None

    def tool_path(self, path: str) -> str:
        """``path`` under the root for a tool that is handed the root as a prefix (``ssh-keygen -f
        ROOT``) and follows links as this machine sees them; UnsafePath when that would lead it
        out of the image (an absolute link the image resolves elsewhere)."""
        followed = os.path.realpath(self.path(path))
        if followed != os.path.realpath(self.real_path(path)):
            raise UnsafePath(f"{path} in {self.root} reaches through a symbolic link to {followed} on this "
                             f"machine; azprov refuses to let a tool follow it out of the image", path=path)
        return followed

    def exists(self, path: str) -> bool:
        return os.path.exists(self.real_path(path))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self.real_path(path))

    def read_text(self, path: str, limit: int = READ_LIMIT) -> Optional[str]:
        """An image's configuration file as text: :meth:`read` with ``follow=True``, where a file
        that is not a regular one (a FIFO, a directory, a file where a directory should be)
        reads as absent."""
        try:
            data = self.read(path, follow=True, limit=limit)
        except (UnsafePath, NotADirectoryError):
            return None
        return None if data is None else data.decode("utf-8", errors="replace")

    def glob(self, pattern: str) -> List[str]:
        """In-root paths matching ``pattern`` (wildcards allowed in any component), sorted."""
        matches = ["/"]
        for part in [p for p in pattern.split("/") if p]:
            found = []
            for base in matches:
                if any(ch in part for ch in "*?["):
                    try:
                        names = os.listdir(self.real_path(base))
                    except OSError:
                        continue
                    found.extend(os.path.join(base, n) for n in sorted(fnmatch.filter(names, part))
                                 if not n.startswith(".") or part.startswith("."))
                else:
                    candidate = os.path.join(base, part)
                    if os.path.lexists(self.real_path(candidate)):
                        found.append(candidate)
            matches = found
        return sorted(matches)

    # -------------------------------------------------------------------- sshd's configuration

    def sshd_config(self) -> sshd_config.SshdFiles:
        """sshd's configuration files (:mod:`azprov.host.sshd_config`), read once and kept until
        azprov writes one of them (or a file an Include matches) through this Host."""
        if self._sshd is None:
            from azprov.host import sshd_config as files

            self._sshd = files.read(self)
        return self._sshd

    # ------------------------------------------------------------------------------- commands

    def which(self, name: str) -> Optional[str]:
        """A tool of *this* machine (tools act on the root through flags like ``--root``)."""
        import shutil

        return shutil.which(name, path=COMMAND_PATH)

    def find_program(self, name: str) -> Optional[str]:
        """A program of the root's own (an image tree's, not this machine's), found as
        :meth:`which` finds one: the first executable regular file ``name`` on COMMAND_PATH, its
        symlinks resolved inside the root.  The in-root path, or None."""
        for directory in COMMAND_PATH.split(":"):
            found = self.real_path(f"{directory}/{name}")
            if os.path.isfile(found) and os.access(found, os.X_OK):
                return f"{directory}/{name}"
        return None

    def root_option(self, flag: str = "--root") -> List[str]:
        """``[flag, root]`` for tools that can work on an image tree; nothing when live."""
        return [] if self.live else [flag, self.root]

    def run(self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
            input: Optional[str] = None) -> CommandResult:
        """Run ``argv`` (never through a shell); raise CommandFailed unless it succeeds or not ``check``."""
        return _runner.run(self.runner, argv, timeout=timeout, check=check, input=input)

    # ---------------------------------------------------------------- the running system (live)

    def set_kernel_hostname(self, name: str) -> bool:
        """Set the running kernel's host name (``sethostname(2)``, what ``hostname NAME`` does;
        no D-Bus); False if it already was ``name`` or the root is an image tree."""
        if not self.live:
            return False
        import socket

        if self.probes.kernel_hostname() == name:
            return False
        try:
            socket.sethostname(name)
        except OSError as exc:
            raise StepFailed(f"could not set the kernel host name to {name}: {exc.strerror or exc}",
                             name=name) from None
        return True
