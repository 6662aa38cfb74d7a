"""The running system's mounts and swap areas, as ``/proc/self/mountinfo`` and ``/proc/swaps``
say (text handed in, so tests give their own)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List


@dataclass(frozen=True)
class Mount:
    device: str  # major:minor
    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(lines: List[str]) -> List[Mount]:
    found = []
    for line in lines:
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 3:
            continue
        found.append(Mount(fields[2], _unescape(fields[4]), fields[dash + 1], _unescape(fields[dash + 2])))
    return found


def swap_files(text: str) -> List[str]:
    """The swap areas in use (``/proc/swaps``: a header line, then one area per line)."""
    return [_unescape(line.split()[0]) for line in text.splitlines()[1:] if line.split()]
