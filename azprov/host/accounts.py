"""The user database of a root, parsed from text (``pwd``/``grp`` would read the build host's):
``/etc/passwd``, ``/etc/group``, ``/etc/shadow`` and ``/etc/login.defs``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple


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
