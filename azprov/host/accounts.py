"""The user database of a root, parsed from text (``pwd``/``grp`` would read the build host's):
``/etc/passwd``, ``/etc/group``, ``/etc/shadow``, ``/etc/login.defs`` and
``/etc/default/useradd``; :class:`Accounts` is the view a ``Host`` gives of them (``host.accounts``),
read afresh on each question (``useradd`` changes them during a run).

It also holds the one policy of which account azprov may make the admin user
(:meth:`Accounts.admin_name`, used by the user and SSH keys steps, ``deprovision --user`` and the
admin-user record, none of which imports another for it): a portable user name
(``^[A-Za-z_][A-Za-z0-9_-]{0,31}$``: upper case is accepted, as Azure and ``useradd`` accept it; it
can never start with ``-`` and become an option) that is not a system account: not a reserved name
(in any case), not an existing account outside ``UID_MIN..UID_MAX`` of the root's ``login.defs``
or one that cannot log in, not the name of an existing system group.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from azprov.errors import InvalidUsername

USERNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,31}$")
NO_LOGIN_SHELLS = frozenset({"nologin", "false"})
RESERVED = frozenset("""
    root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats
    nobody nogroup _apt sshd messagebus dbus polkitd systemd-network systemd-resolve
    systemd-timesync systemd-coredump tss chrony ntp postfix ftp halt shutdown operator adm
    wheel sudo shadow staff users admin
""".split())


@dataclass(frozen=True)
class PasswdEntry:
    """One ``/etc/passwd`` record."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class GroupEntry:
    """One ``/etc/group`` record."""

    name: str
    gid: int
    members: Tuple[str, ...]


def records(text: Optional[str], fields: int) -> Iterator[List[str]]:
    """The colon-separated records of ``text`` with at least ``fields`` fields (comments and NIS
    ``+``/``-`` lines skipped)."""
    for line in (text or "").splitlines():
        if not line or line.startswith(("#", "+", "-")):
            continue
        record = line.split(":")
        if len(record) >= fields:
            yield record


def parse_passwd(text: Optional[str]) -> List[PasswdEntry]:
    return [PasswdEntry(r[0], int(r[2]), int(r[3]), r[5], r[6])
            for r in records(text, 7) if r[2].isdigit() and r[3].isdigit()]


def parse_group(text: Optional[str]) -> List[GroupEntry]:
    return [GroupEntry(r[0], int(r[2]), tuple(m for m in r[3].split(",") if m))
            for r in records(text, 4) if r[2].isdigit()]


def shadow_field(text: Optional[str], name: str) -> Optional[str]:
    """The user's hash field in ``/etc/shadow`` text (``!...`` when locked), None if no entry."""
    for r in records(text, 2):
        if r[0] == name:
            return r[1]
    return None


def parse_login_defs(text: Optional[str]) -> Dict[str, str]:
    values: Dict[str, str] = {}
    for line in (text or "").splitlines():
        words = line.split()
        if len(words) >= 2 and not words[0].startswith("#"):
            values[words[0]] = words[1]
    return values


def parse_shell_variables(text: Optional[str]) -> Dict[str, str]:
    """``KEY=VALUE`` lines (``/etc/default/useradd``), quotes removed; comments skipped."""
    values: Dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


def uid_min(login_defs: Dict[str, str]) -> int:
    value = login_defs.get("UID_MIN", "1000")
    return int(value) if value.isdigit() else 1000


class Accounts:
    """The accounts of a root, through its ``read_text`` (symlinks resolved inside the root)."""

    def __init__(self, read_text: Callable[[str], Optional[str]]) -> None:
        self._read = read_text

    def users(self) -> List[PasswdEntry]:
        return parse_passwd(self._read("/etc/passwd"))

    def user(self, name: str) -> Optional[PasswdEntry]:
        return next((entry for entry in self.users() if entry.name == name), None)

    def groups(self) -> List[GroupEntry]:
        return parse_group(self._read("/etc/group"))

    def group(self, name: str) -> Optional[GroupEntry]:
        return next((entry for entry in self.groups() if entry.name == name), None)

    def password_field(self, name: str) -> Optional[str]:
        """The user's hash field in ``/etc/shadow`` (``!...`` when locked), None if no entry."""
        return shadow_field(self._read("/etc/shadow"), name)

    def login_defs(self) -> Dict[str, str]:
        return parse_login_defs(self._read("/etc/login.defs"))

    def uid_min(self) -> int:
        return uid_min(self.login_defs())

    def useradd_defaults(self) -> Dict[str, str]:
        return parse_shell_variables(self._read("/etc/default/useradd"))

    def admin_name(self, username: str) -> str:
        """``username`` if azprov may make it the admin user (create or update it), else
        InvalidUsername saying why: the admin-account policy of the module's docstring."""
        shown = username if len(username) <= 40 else username[:40] + "..."
        if not USERNAME.fullmatch(username):
            raise InvalidUsername(
                f"adminUsername {shown!r} is not a portable user name "
                "(letters, digits, '_' and '-', not starting with '-' or a digit, "
                "at most 32 characters)",
                admin_username=shown,
            )
        if username.lower() in RESERVED:
            raise InvalidUsername(f"adminUsername {username!r} is a reserved system account",
                                  admin_username=username)
        defs = self.login_defs()
        uid_min = self.uid_min()
        uid_max = int(defs["UID_MAX"]) if defs.get("UID_MAX", "").isdigit() else 60000
        entry = self.user(username)
        if entry is not None and not uid_min <= entry.uid <= uid_max:
            raise InvalidUsername(
                f"adminUsername {username!r} is an existing system account (uid {entry.uid})",
                admin_username=username, uid=entry.uid,
            )
        if entry is not None and os.path.basename(entry.shell) in NO_LOGIN_SHELLS:
            raise InvalidUsername(
                f"adminUsername {username!r} is an existing account that cannot log in (shell "
                f"{entry.shell}); azprov will not make it the admin user", admin_username=username)
        group = self.group(username)
        gid_min = int(defs["GID_MIN"]) if defs.get("GID_MIN", "").isdigit() else uid_min
        if entry is None and group is not None and group.gid < gid_min:
            raise InvalidUsername(
                f"adminUsername {username!r} is the name of a system group (gid {group.gid})",
                admin_username=username, gid=group.gid,
            )
        return username
