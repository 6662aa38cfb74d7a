"""Reaching a file that belongs to one account, the way sshd's ``StrictModes`` judges it.

sshd reads an account's authorized keys only if the file and every directory above it (up to the
home, or up to ``/`` for a file outside the home) are owned by root or by that account and are not
writable by group or others.  :func:`open_parent` walks to such a file's directory from the root
with ``O_NOFOLLOW`` (a symlink anywhere is refused), applies exactly that test to every directory
that exists, and never changes an existing directory: with ``create``, missing directories are
made, the account's (0700) below its home and root's (0755) elsewhere.  Without ``create`` it only
looks, so a caller can refuse a trap before anything changes.

:func:`check_file` judges the file itself: absent, or a regular file with one link.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import List, Optional, Tuple

from azprov.host.accounts import PasswdEntry
from azprov.host.walk import Dir, UnsafePath, split_path

log = logging.getLogger(__name__)

NO_UID = -1  # an account that does not exist yet: only root's directories are acceptable


def inside(path: str, home: str) -> bool:
    """True if ``path`` is strictly below ``home`` (both absolute, normalized)."""
    return bool(home) and os.path.normpath(path).startswith(os.path.normpath(home).rstrip("/") + "/")


def check_dir(info: os.stat_result, where: str, account: PasswdEntry) -> None:
    """sshd's StrictModes test of one directory (or file): root's or the account's, and not
    writable by group or others."""
    if info.st_uid not in (0, account.uid):
        raise UnsafePath(f"{where} is owned by uid {info.st_uid}, not by {account.name} or root; "
                         "sshd would refuse keys there, so azprov will not write them",
                         path=where, uid=info.st_uid)
    if stat.S_IMODE(info.st_mode) & 0o022:
        raise UnsafePath(f"{where} is writable by group or others (mode "
                         f"{stat.S_IMODE(info.st_mode):o}); sshd would refuse keys there",
                         path=where)


def open_parent(root: Dir, account: PasswdEntry, path: str, *,
                create: bool) -> Tuple[Optional[Dir], List[str]]:
    """The open directory holding ``path`` and the directories created on the way (in-root paths,
    outermost first).  Without ``create``, a missing directory gives ``(None, [])``: only what
    exists can be unsafe.  ``root`` is an open Dir of ``/`` and stays open."""
    parts = split_path(os.path.dirname(path))
    below_home = inside(path, account.home)
    home_depth = len(split_path(account.home)) if below_home else None
    created: List[str] = []
    current = Dir(os.dup(root.fd), "/", root.real)
    try:
        if home_depth is None:  # sshd checks every directory up to / for a file outside the home
            check_dir(current.stat(), "/", account)
        for depth, part in enumerate(parts, 1):
            checked = home_depth is None or depth >= home_depth
            exists = current.lstat(part) is not None
            if not exists and not create:
                current.close()
                return None, []
            ours = home_depth is not None and depth > home_depth
            if not exists and home_depth is not None and depth == home_depth:
                raise UnsafePath(f"{account.name}'s home {account.home} does not exist",
                                 path=account.home)
            child = current.subdir(part, create_mode=(0o700 if ours else 0o755) if create else None,
                                   uid=account.uid if ours else 0, gid=account.gid if ours else 0)
            current.close()
            current = child
            if not exists:
                created.append(current.path)
                continue
            if checked:
                check_dir(current.stat(), current.path, account)
    except BaseException:
        current.close()
        raise
    return current, created


def check_file(directory: Dir, name: str, account: Optional[PasswdEntry] = None) -> Optional[os.stat_result]:
    """The keys file ``name`` in ``directory``: None if absent; refused unless a regular file
    with a single link (a hard link would carry the keys into another file, say /etc/shadow).
    With ``account``, an existing file outside its home must already be the account's: azprov
    never takes over a file elsewhere (``/etc/ssh/%u`` for a user named ``sshd_config``)."""
    info = directory.lstat(name)
    where = directory.path.rstrip("/") + "/" + name
    if info is None:
        return None
    if account is not None and not inside(where, account.home) and info.st_uid != account.uid:
        raise UnsafePath(f"{where} already exists outside {account.name}'s home and belongs to uid "
                         f"{info.st_uid}; azprov will not make it {account.name}'s keys file",
                         path=where, uid=info.st_uid)
    if not stat.S_ISREG(info.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise UnsafePath(f"{where} is {what}; azprov refuses to write keys through it", path=where)
    if info.st_nlink > 1:
        raise UnsafePath(f"{where} has {info.st_nlink} hard links; azprov refuses to rewrite a "
                         "file that is also somewhere else", path=where, links=info.st_nlink)
    return info
