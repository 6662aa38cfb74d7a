"""Reading sshd's configuration the way sshd does: ``Include`` expanded in place, first value wins.

Only global settings count (lines inside a ``Match`` block other than ``Match all`` are skipped);
included files are read where the ``Include`` appears, glob results in sorted order, relative
patterns relative to ``/etc/ssh``.  Everything is read inside the host's root.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shlex
from dataclasses import dataclass
from typing import List, Optional

from azprov.host import Host

log = logging.getLogger(__name__)

SSHD_CONFIG = "/etc/ssh/sshd_config"
DROPIN_DIR = "/etc/ssh/sshd_config.d"
MAX_DEPTH = 16
_SPLIT = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+)(.*?)\s*$")


@dataclass(frozen=True)
class Directive:
    keyword: str  # lower case
    value: str
    source: str  # in-root path of the file
    line: int


def _tokens(value: str) -> List[str]:
    try:
        return shlex.split(value, comments=False, posix=True)
    except ValueError:
        return value.split()


def directives(host: Host, path: str = SSHD_CONFIG, _depth: int = 0) -> List[Directive]:
    """The global directives of ``path`` and what it includes, in the order sshd reads them."""
    text = host.read_text(path)
    if text is None or _depth > MAX_DEPTH:
        return []
    found: List[Directive] = []
    in_match = False
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parsed = _SPLIT.match(line)
        if parsed is None:
            continue
        keyword, value = parsed.group(1).lower(), parsed.group(2)
        if keyword == "match":
            in_match = value.strip().lower() != "all"
            continue
        if in_match:
            continue
        if keyword == "include":
            found.append(Directive(keyword, value, path, number))
            for pattern in _tokens(value):
                if not pattern.startswith("/"):
                    pattern = os.path.join("/etc/ssh", pattern)
                for included in host.glob(pattern):
                    found.extend(directives(host, included, _depth + 1))
            continue
        found.append(Directive(keyword, value, path, number))
    return found


def first(host: Host, keyword: str) -> Optional[Directive]:
    """The directive sshd uses for ``keyword`` (the first one it reads), or None."""
    keyword = keyword.lower()
    return next((d for d in directives(host) if d.keyword == keyword), None)


def includes(host: Host, candidate: str) -> bool:
    """True if sshd_config (outside Match blocks) has an Include whose pattern covers ``candidate``."""
    for directive in directives(host):
        if directive.keyword != "include" or directive.source != SSHD_CONFIG:
            continue
        for pattern in _tokens(directive.value):
            if not pattern.startswith("/"):
                pattern = os.path.join("/etc/ssh", pattern)
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
    return False


def authorized_keys_files(host: Host) -> List[str]:
    """``AuthorizedKeysFile`` patterns sshd uses (``%h/.ssh/authorized_keys`` style), in order."""
    directive = first(host, "authorizedkeysfile")
    if directive is None:
        return [".ssh/authorized_keys", ".ssh/authorized_keys2"]
    tokens = _tokens(directive.value)
    if [t.lower() for t in tokens] == ["none"]:
        return []
    return tokens


def expand(pattern: str, *, home: str, user: str) -> str:
    """An AuthorizedKeysFile pattern for one user: ``%h``, ``%u``, ``%%`` (and ``~``) expanded;
    relative results are relative to the home.  Other ``%`` tokens are left for the caller to refuse."""
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "%" and index + 1 < len(pattern):
            token = pattern[index + 1]
            out.append({"h": home, "u": user, "%": "%"}.get(token, "%" + token))
            index += 2
            continue
        out.append(char)
        index += 1
    path = "".join(out)
    if path.startswith("~/"):
        path = os.path.join(home, path[2:])
    if not path.startswith("/"):
        path = os.path.join(home, path)
    return path
