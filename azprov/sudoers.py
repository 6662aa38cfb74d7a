"""sudo: azprov's own drop-in ``/etc/sudoers.d/90-azprov``, and what ``azprov check`` looks for in
the image's other rules.

**The drop-in is azprov's, whole.**  It holds one line for each admin user azprov provisioned on
this image (the record of :mod:`azprov.admins`) that is still a regular account, and nothing else:
``NAME ALL=(ALL) NOPASSWD:ALL`` when the account's password is locked (keys only), ``NAME
ALL=(ALL) PASSWD:ALL`` when it has a password (sudo asks for it, as WALinuxAgent does).  A name
sudo would not read as a user (``ALL``, which is every user, or any other all-upper-case name,
which is an alias the image may define) is refused before anything changes.  It is
rendered from that record every time, never merged with what the file holds: a line an image
planted there (``ALL ALL=(ALL) NOPASSWD:ALL``) is dropped, with a warning naming it.  The new file
is mode 0440, root's, written to a temp file that ``visudo -c -f`` checks before it is renamed over
the old one; a symbolic link planted at its name is replaced (never followed), anything else that
is not a regular file is refused before any step changes anything.

**The rest of sudo's rules are the image's.**  azprov does not edit them; :func:`audit` finds what
would give every VM of the image the same way to root, for ``azprov check``: a rule for ``ALL``
users (directly or through a ``User_Alias``), and an include of anything but ``/etc/sudoers.d``
(sudo would read rules from a place this audit, and the image's builder, do not look at).
"""

from __future__ import annotations

import logging
import posixpath
import re
import stat
from dataclasses import dataclass
from typing import List, Optional, Sequence

from azprov.errors import InvalidUsername, StepFailed, UnsafePath
from azprov.host import Host, passwords

log = logging.getLogger(__name__)

SUDOERS = "/etc/sudoers"
SUDOERS_DIR = "/etc/sudoers.d"
DROPIN = "/etc/sudoers.d/90-azprov"
DROPIN_LIMIT = 64 * 1024  # what is read of an existing drop-in to name its dropped lines
HEADER = "# Admin users provisioned by azprov (https://aka.ms/linuxprovisioningerror).\n"
_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]{0,31}) ALL=\(ALL\) (NOPASSWD|PASSWD):ALL$")
_INCLUDEDIR = re.compile(r"^[#@]includedir\s+/etc/sudoers\.d/?\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^[#@](include|includedir)\s+(.+?)\s*$")
_WARNED_LINES = 20  # dropped lines named one by one; the rest counted
# What sudo's lexer reads as an alias name (or ALL), never as a user: upper case, digits, '_'.
_ALIAS = re.compile(r"[A-Z][A-Z0-9_]*")


@dataclass(frozen=True)
class Grant:
    """One line of the drop-in: ``name`` may run anything as root, after its password if asked."""

    name: str
    ask_password: bool = False

    def line(self) -> str:
        return f"{self.name} ALL=(ALL) {'PASSWD' if self.ask_password else 'NOPASSWD'}:ALL\n"


def render(grants: Sequence[Grant]) -> bytes:
    return (HEADER + "".join(grant.line() for grant in grants)).encode()


def users(text: str) -> List[str]:
    """The users that lines of azprov's form grant sudo rights in ``text``, in order (``ALL`` is
    sudo's word for every user, no user's name)."""
    return [m.group(1) for m in map(_LINE.match, text.splitlines()) if m and m.group(1) != "ALL"]


def check_name(name: str) -> str:
    """``name`` if sudo reads it as a user name in a rule; InvalidUsername for ``ALL`` (every
    user) and the other names sudo reads as a ``User_Alias`` (``AZUREUSER``: whatever the image
    defines it as, or nobody)."""
    if _ALIAS.fullmatch(name):
        raise InvalidUsername(
            f"adminUsername {name!r} is all upper case: sudo would read it as "
            f"{'every user' if name == 'ALL' else 'an alias'}, not as the admin user; use a name "
            "with a lower-case letter", admin_username=name)
    return name


def grants_for(host: Host, names: Sequence[str]) -> List[Grant]:
    """The grants for the admin users ``names``: those that are regular accounts (uid at least
    ``UID_MIN``), asked for their password when they have one."""
    uid_min = host.accounts.uid_min()
    grants = []
    for name in dict.fromkeys(names):
        if _ALIAS.fullmatch(name):
            log.warning("no sudo rights for %s in %s: sudo would read the name as %s", name, DROPIN,
                        "every user" if name == "ALL" else "an alias")
            continue
        entry = host.accounts.user(name)
        if entry is None or entry.uid < uid_min:
            log.info("no sudo rights for %s in %s: %s", name, DROPIN,
                     "no such account" if entry is None else f"a system account (uid {entry.uid})")
            continue
        grants.append(Grant(name, ask_password=passwords.usable(host.accounts.password_field(name))))
    return grants


def check(host: Host) -> None:
    """Refuse now what :func:`own` would refuse later (a symlink on the way, a directory or
    device at the drop-in's name)."""
    host.check_writable(DROPIN, parents_only=True)
    info = host.lstat(DROPIN)
    if info is not None and not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
        raise UnsafePath(f"{DROPIN} is not a regular file; azprov refuses to replace it", path=DROPIN)


def _visudo_check(host: Host):
    visudo = host.which("visudo")
    if visudo is None:
        raise StepFailed("visudo is not installed on this machine: cannot check the sudoers drop-in")

    def run(path: str) -> None:
        host.run([visudo, "-c", "-q", "-f", path], timeout=30)

    return run


def _previous(host: Host) -> str:
    """What the drop-in holds now (a planted symlink is removed first: replaced, not followed)."""
    info = host.lstat(DROPIN)
    if info is None:
        return ""
    if stat.S_ISLNK(info.st_mode):
        log.warning("%s is a symbolic link (to %s): removing the link (not what it points to); "
                    "azprov writes its own file there", DROPIN, host.link_target(DROPIN))
        host.remove(DROPIN)
        return ""
    try:
        data = host.read_file(DROPIN, limit=DROPIN_LIMIT) or b""
    except StepFailed:  # larger than the limit: replaced whole all the same
        log.warning("%s is larger than %d bytes: replacing it whole, unread", DROPIN, DROPIN_LIMIT)
        return ""
    return data.decode("utf-8", "replace")


def _warn_dropped(previous: str, wanted: str) -> None:
    keep = set(wanted.splitlines())
    dropped = [line for line in previous.splitlines() if line.strip() and line not in keep]
    for line in dropped[:_WARNED_LINES]:
        log.warning("%s: dropping %r: azprov's drop-in holds only the admin users it provisioned",
                    DROPIN, line[:200])
    if len(dropped) > _WARNED_LINES:
        log.warning("%s: dropping %d more lines", DROPIN, len(dropped) - _WARNED_LINES)


def own(host: Host, grants: Sequence[Grant]) -> bool:
    """Make the drop-in hold exactly ``grants`` (removed when there are none); True if it changed.

    Without sudo (no ``/etc/sudoers``), or when ``/etc/sudoers`` does not read ``/etc/sudoers.d``,
    nothing is written: the drop-in would never be read (logged).  An image that plants a line
    there gets it back when a later sudo reads the directory: ``azprov check`` reports it."""
    if not grants:  # nothing to grant: no need of sudo, nor of visudo, to remove the file
        _warn_dropped(_previous(host), HEADER)
        return host.remove(DROPIN)
    main = host.read_text(SUDOERS)
    if main is None:
        log.warning("sudo is not installed (no %s): %s gets no sudo rights",
                    SUDOERS, ", ".join(g.name for g in grants) or "nobody")
        return False
    if not _INCLUDEDIR.search(main):
        log.warning("%s does not include /etc/sudoers.d: %s is not read; not rewriting %s",
                    SUDOERS, DROPIN, SUDOERS)
        return False
    wanted = render(grants)
    _warn_dropped(_previous(host), wanted.decode())
    changed = host.write_file(DROPIN, wanted, mode=0o440, parents=0o755, check=_visudo_check(host))
    if changed:
        log.info("%s grants sudo to %s", DROPIN, ", ".join(
            f"{g.name} ({'with' if g.ask_password else 'without'} password)" for g in grants))
    return changed


# --- what azprov check looks for in the image's rules ------------------------------------------


@dataclass(frozen=True)
class Finding:
    """A rule or directive of the image's sudo configuration that check reports."""

    path: str
    line: str
    what: str


def _read_by_sudo(name: str) -> bool:
    """sudo's ``includedir`` skips names that end in ``~`` or contain a ``.``."""
    return not name.endswith("~") and "." not in name


def sources(host: Host) -> List[str]:
    """``/etc/sudoers`` and the drop-ins sudo reads from ``/etc/sudoers.d``."""
    found = [SUDOERS] if host.exists(SUDOERS) else []
    found += sorted(p for p in host.glob(f"{SUDOERS_DIR}/*")
                    if _read_by_sudo(p.rsplit("/", 1)[1]) and not host.is_dir(p))
    return found


def _logical_lines(text: str) -> List[str]:
    """Lines with sudoers' backslash continuations joined, comments (not ``#include``) dropped."""
    lines, pending = [], ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line and (not line.startswith("#") or _INCLUDE.match(line)):
            lines.append(line)
    return lines


def _included_elsewhere(path: str, line: str) -> Optional[str]:
    """What an include line makes sudo read, unless it is ``/etc/sudoers.d`` or a file in it (a
    relative path is relative to the including file's directory, as sudo 1.9 reads it)."""
    match = _INCLUDE.match(line)
    if not match:
        return None
    target = posixpath.normpath(posixpath.join(posixpath.dirname(path), match.group(2).strip('"')))
    if target == SUDOERS_DIR or (match.group(1) == "include" and target.startswith(SUDOERS_DIR + "/")):
        return None
    return target


def _users_of(line: str) -> List[str]:
    """The user list of a rule (``alice, %admin  ALL = ...``), or [] for anything else."""
    left, equals, _ = line.partition("=")
    if not equals or line.startswith("Defaults") or line.split()[0].endswith("_Alias"):
        return []
    words = re.sub(r"\s*,\s*", ",", left.strip()).split()
    if len(words) != 2:  # an alias definition, or not a rule azprov can read
        return []
    return [name.lstrip("!") for name in words[0].split(",")]


def audit(host: Host) -> List[Finding]:
    """The rules and includes of the image's sudo configuration that :mod:`azprov.check` reports
    (see the module's description)."""
    findings = []
    everyone = {"ALL"}
    texts = [(path, host.read_text(path) or "") for path in sources(host)]
    for _path, text in texts:  # User_Alias EVERYONE = ALL, anywhere: read before the rules
        for line in _logical_lines(text):
            words = line.split(None, 1)
            if words[0] == "User_Alias" and len(words) == 2:
                for alias in words[1].split(":"):
                    name, _, members = alias.partition("=")
                    if "ALL" in {m.strip().lstrip("!") for m in members.split(",")}:
                        everyone.add(name.strip())
    for path, text in texts:
        for line in _logical_lines(text):
            target = _included_elsewhere(path, line)
            if target is not None:
                findings.append(Finding(path, line, f"sudo also reads rules from {target}"))
            elif everyone & set(_users_of(line)):
                findings.append(Finding(path, line, "every account may run commands as root"))
    return findings
