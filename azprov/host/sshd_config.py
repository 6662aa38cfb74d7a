"""Reading sshd's configuration the way sshd does: ``Include`` expanded in place, first value wins.

Only global settings count (lines inside a ``Match`` block other than ``Match all`` are skipped);
included files are read where the ``Include`` appears, glob results in sorted order, relative
patterns relative to ``/etc/ssh``.  Everything is read inside the host's root.

The files are read once per :class:`~azprov.host.Host` (:meth:`Host.sshd_config`, kept until
azprov itself writes below ``/etc/ssh``): :func:`read` collects them in an :class:`SshdFiles`,
and every question below (the directives, the first value of a keyword, whether a path is
included, the authorized-keys files) is answered from it, also "as it will be once azprov's
drop-in is written" (``overlay``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shlex
import typing
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

if typing.TYPE_CHECKING:
    from azprov.host import Host

log = logging.getLogger(__name__)

SSHD_CONFIG = "/etc/ssh/sshd_config"
DROPIN_DIR = "/etc/ssh/sshd_config.d"
MAX_DEPTH = 16
_SPLIT = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+)(.*?)\s*$")


@dataclass(frozen=True)
class Directive:
    """One sshd_config keyword line, and where it is."""

    keyword: str  # lower case
    value: str
    source: str  # in-root path of the file
    line: int


@dataclass(frozen=True)
class SshdFiles:
    """sshd's configuration as read once: every file reached from ``sshd_config`` through
    ``Include`` (text, None when absent), and what each Include pattern matched."""

    texts: Mapping[str, Optional[str]]
    matches: Mapping[str, Tuple[str, ...]]

    def covers(self, path: str) -> bool:
        """Whether writing ``path`` changes what was read (a file read, or one an Include matches)."""
        return path in self.texts or any(fnmatch.fnmatchcase(path, pattern) for pattern in self.matches)


def read(host: "Host") -> SshdFiles:
    """Read ``sshd_config`` and every file it includes, each once (loops and depth do not matter
    here: :func:`directives` applies sshd's limit when it walks them)."""
    texts: Dict[str, Optional[str]] = {}
    matches: Dict[str, Tuple[str, ...]] = {}
    pending = [SSHD_CONFIG]
    while pending:
        path = pending.pop(0)
        if path in texts:
            continue
        texts[path] = text = host.read_text(path)
        for pattern in _include_patterns(text or ""):
            if pattern not in matches:
                matches[pattern] = tuple(host.glob(pattern))
            pending.extend(matches[pattern])
    return SshdFiles(texts, matches)


def _lines(text: str):
    """``(number, keyword, value, in a Match block)`` of each keyword line of ``text``."""
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
        yield number, keyword, value, in_match


def _include_patterns(text: str) -> List[str]:
    return [_absolute(pattern) for _n, keyword, value, in_match in _lines(text)
            if keyword == "include" and not in_match for pattern in _tokens(value)]


def _absolute(pattern: str) -> str:
    return pattern if pattern.startswith("/") else os.path.join("/etc/ssh", pattern)


def _tokens(value: str) -> List[str]:
    try:
        return shlex.split(value, comments=False, posix=True)
    except ValueError:
        return value.split()


def directives(host: "Host", path: str = SSHD_CONFIG, _depth: int = 0, *,
               overlay: Optional[Dict[str, str]] = None,
               matched: Optional[List[Directive]] = None) -> List[Directive]:
    """The global directives of ``path`` and what it includes, in the order sshd reads them.

    ``overlay`` maps in-root paths to text read instead of the file (a drop-in azprov is about
    to write counts as written); ``matched`` collects the directives of ``Match`` blocks."""
    files = host.sshd_config()
    overlay = overlay or {}
    text = overlay[path] if path in overlay else files.texts.get(path)
    if text is None or _depth > MAX_DEPTH:
        return []
    found: List[Directive] = []
    for number, keyword, value, in_match in _lines(text):
        if in_match:
            if matched is not None:
                matched.append(Directive(keyword, value, path, number))
            continue
        found.append(Directive(keyword, value, path, number))
        if keyword == "include":
            for pattern in map(_absolute, _tokens(value)):
                paths = set(files.matches.get(pattern, ()))
                paths.update(p for p in overlay if fnmatch.fnmatchcase(p, pattern))
                for included in sorted(paths):
                    found.extend(directives(host, included, _depth + 1, overlay=overlay,
                                            matched=matched))
    return found


def first(host: "Host", keyword: str, *, overlay: Optional[Dict[str, str]] = None) -> Optional[Directive]:
    """The directive sshd uses for ``keyword`` (the first one it reads), or None."""
    keyword = keyword.lower()
    return next((d for d in directives(host, overlay=overlay) if d.keyword == keyword), None)


def value(directive: Optional[Directive], default: str) -> str:
    """The first word of a directive's value, lower case; ``default`` (sshd's) when unset."""
    words = _tokens(directive.value) if directive is not None else []
    return words[0].lower() if words else default


def includes(host: "Host", candidate: str) -> bool:
    """True if sshd_config (outside Match blocks) has an Include whose pattern covers ``candidate``."""
    for directive in directives(host):
        if directive.keyword != "include" or directive.source != SSHD_CONFIG:
            continue
        if any(fnmatch.fnmatchcase(candidate, pattern) for pattern in map(_absolute, _tokens(directive.value))):
            return True
    return False


def authorized_keys_files(host: "Host") -> List[str]:
    """``AuthorizedKeysFile`` patterns sshd uses (``%h/.ssh/authorized_keys`` style), in order."""
    directive = first(host, "authorizedkeysfile")
    if directive is None:
        return [".ssh/authorized_keys", ".ssh/authorized_keys2"]
    tokens = _tokens(directive.value)
    if [t.lower() for t in tokens] == ["none"]:
        return []
    return tokens


def expand(pattern: str, *, home: str, user: str, uid: Optional[int] = None) -> str:
    """An AuthorizedKeysFile pattern for one user: ``%h``, ``%u``, ``%U`` (the uid), ``%%`` (and
    ``~``) expanded; relative results are relative to the home.  Other ``%`` tokens are left for
    the caller to refuse."""
    values = {"h": home, "u": user, "%": "%"}
    if uid is not None:
        values["U"] = str(uid)
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "%" and index + 1 < len(pattern):
            token = pattern[index + 1]
            out.append(values.get(token, "%" + token))
            index += 2
            continue
        out.append(char)
        index += 1
    path = "".join(out)
    if path.startswith("~/"):
        path = os.path.join(home, path[2:])
    if not path.startswith("/"):
        path = os.path.join(home, path)
    if ".." in path.split("/"):
        return path  # left as it is: the caller refuses it
    return os.path.normpath(path)


def per_user(pattern: str) -> bool:
    """True if ``pattern`` names a different file for each account (a token, or relative to the
    home); an absolute pattern without one is a single file sshd reads for every account."""
    return not pattern.startswith("/") or any(token in pattern for token in ("%h", "%u", "%U"))


def user_authorized_keys_files(host: "Host", *, home: str, user: str,
                               uid: Optional[int] = None) -> Tuple[List[str], List[str]]:
    """``(files of this user, files shared by every user)`` sshd reads authorized keys from,
    expanded, in sshd's order.  A pattern with a token azprov cannot expand counts as neither."""
    mine: List[str] = []
    shared: List[str] = []
    for pattern in authorized_keys_files(host):
        path = expand(pattern, home=home, user=user, uid=uid)
        if "%" in path.replace("%%", ""):
            log.warning("AuthorizedKeysFile %r uses a token azprov cannot expand; skipped", pattern)
            continue
        if ".." in path.split("/"):
            log.warning("AuthorizedKeysFile %r climbs with '..' (%s); azprov never writes there",
                        pattern, path[:200])
            continue
        (mine if per_user(pattern) else shared).append(path)
    return mine, shared
