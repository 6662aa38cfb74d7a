"""The admin user: ``compute.osProfile.adminUsername`` with sudo rights; its password locked
unless the provisioning disc carries one (then the password step sets it).

Which name may be the admin user is the accounts' policy (:meth:`azprov.host.Accounts.admin_name`:
a portable user name, never a system account).

The home must be in the usual place: strictly below ``/home`` (or the ``HOME`` of
``/etc/default/useradd``), reached without a symlink, a directory of the user or root that group
and others cannot write (sshd's ``StrictModes``).  A home left behind with no user (root's, from
the image build) becomes the new user's; one owned by anybody else is refused.  All of this is
checked before any step changes anything.

Created with the real ``useradd`` (``--root`` for an image tree) with a home and a user private
group; an existing user is updated, never recreated.  It joins the first of the configured admin
groups that exists.  Without a password (keys only) the password is locked.  Its sudo rights
are not this step's: once the steps are done, the flow records the user (:mod:`azprov.admins`)
and rewrites azprov's sudoers drop-in from that record (:mod:`azprov.sudoers`).
"""

from __future__ import annotations

import logging
import os
import stat
from typing import List, Optional

from azprov.errors import StepFailed, UnsafePath, UnusableHome
from azprov.host import NO_UID, Host, PasswdEntry, check_dir

log = logging.getLogger(__name__)

NAME = "user"
HOME_BASE = "/home"
SYSTEM_DIRS = frozenset("""
    / /bin /boot /dev /etc /lib /lib32 /lib64 /libx32 /opt /proc /root /run /sbin /srv /sys /tmp
    /usr /var /var/lib /var/tmp
""".split())


def enabled(settings) -> bool:
    return settings.create_user


def check(host: Host, metadata, settings) -> None:
    username = host.accounts.admin_name(metadata.os_profile.admin_username)
    check_home(host, username)


def home_bases(host: Host) -> List[str]:
    """Where homes usually are: ``/home``, and ``HOME`` of ``/etc/default/useradd`` unless that
    is a system directory."""
    bases = [HOME_BASE]
    configured = host.accounts.useradd_defaults().get("HOME", "")
    if configured.startswith("/") and ".." not in configured.split("/"):
        configured = os.path.normpath(configured)
        if configured not in SYSTEM_DIRS and configured not in bases:
            bases.append(configured)
    return bases


def account(host: Host, username: str) -> PasswdEntry:
    """The user as ``/etc/passwd`` has it, or as ``useradd`` will create it (no uid yet)."""
    entry = host.accounts.user(username)
    if entry is not None:
        return entry
    configured = host.accounts.useradd_defaults().get("HOME", "") or HOME_BASE
    base = os.path.normpath(configured) if configured.startswith("/") and \
        ".." not in configured.split("/") else configured  # a bad HOME is refused by check_home
    return PasswdEntry(username, NO_UID, NO_UID, f"{base.rstrip('/')}/{username}", "")


def check_home(host: Host, username: str) -> PasswdEntry:
    """Refuse a home azprov cannot make a working login of (see the module's description)."""
    entry = account(host, username)
    home = entry.home
    shown = home[:80] or "(empty)"
    if not home.startswith("/") or ".." in home.split("/") or \
            not any(os.path.normpath(home).startswith(base + "/") for base in home_bases(host)):
        raise UnusableHome(f"{username}'s home {shown} is not below {' or '.join(home_bases(host))}; "
                           "azprov will not hand another place to the user", home=shown)
    try:
        info = host.lstat(home)
    except UnsafePath as exc:
        raise UnusableHome(f"{username}'s home {home}: {exc}", home=home) from None
    if info is None:
        return entry
    if not stat.S_ISDIR(info.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a directory"
        raise UnusableHome(f"{username}'s home {home} is {what}", home=home)
    if entry.uid == NO_UID and info.st_uid != 0:
        raise UnusableHome(f"{home} already exists and belongs to uid {info.st_uid}, not to the new "
                           f"user {username}", home=home, uid=info.st_uid)
    if entry.uid != NO_UID:
        try:
            check_dir(info, home, entry)
        except UnsafePath as exc:
            raise UnusableHome(str(exc), home=home) from None
    return entry


def apply(host: Host, metadata, settings) -> bool:
    username = host.accounts.admin_name(metadata.os_profile.admin_username)
    clear_stale_locks(host)
    changed = ensure_user(host, username, admin_group(host, settings.admin_groups))
    changed = ensure_admin_group(host, username, settings.admin_groups) or changed
    if getattr(metadata, "password", None) is None:
        changed = ensure_locked(host, username) or changed
    return changed


# What shadow-utils leaves when it is killed, or the power goes, while it holds an account
# database: the lock ``/etc/<db>.lock`` and the file it is linked from, ``/etc/<db>.<pid>``, both
# holding the holder's PID (shadow's lib/commonio.c, do_lock_file).  A tool that meets the lock of
# a PID that no longer runs removes it itself, but after a reboot the PID may be another
# process's, and then every useradd fails "cannot lock /etc/passwd; try again later".
ACCOUNT_DATABASES = ("passwd", "shadow", "group", "gshadow", "subuid", "subgid")
ACCOUNT_TOOLS = ("useradd", "usermod", "userdel", "groupadd", "groupmod", "groupdel", "gpasswd",
                 "chpasswd", "chgpasswd", "passwd", "chage", "chfn", "chsh", "newusers", "vipw",
                 "vigr", "pwconv", "pwunconv", "grpconv", "grpunconv", "pwck", "grpck")


def clear_stale_locks(host: Host) -> List[str]:
    """Remove the account database locks (and their ``.<pid>`` files) of tools no longer running;
    the paths removed.  A lock whose PID is a running account tool is left alone."""
    found = [path for db in ACCOUNT_DATABASES for path in host.glob(f"/etc/{db}.*")
             if path.rsplit(".", 1)[1] == "lock" or path.rsplit(".", 1)[1].isdigit()]
    if not found:
        return []
    running = {pid for tool in ACCOUNT_TOOLS for pid, _ in host.probes.processes(tool)}
    removed = []
    for path in found:
        info = host.lstat(path)
        if info is None or not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            continue  # not what shadow-utils makes: not ours to remove
        suffix = path.rsplit(".", 1)[1]
        try:
            holder = (host.read(path, follow=False, limit=64) or b"").decode("ascii", "replace").strip("\0 \t\n")
        except (UnsafePath, StepFailed):
            holder = ""  # a link, a directory or a large file: no lock of shadow-utils
        pids = {int(text) for text in (holder, suffix) if text.isdigit()}
        if pids & running:
            continue
        if host.remove(path):
            removed.append(path)
    if removed:
        log.warning("removed account database locks left by an interrupted tool: %s",
                    ", ".join(removed))
    return removed


def ensure_user(host: Host, username: str, admin: Optional[str] = None) -> bool:
    """Create the user (in the ``admin`` group at once: one ``usermod`` fewer on the first boot's
    critical path) or update an existing one; True if that changed something."""
    entry = host.accounts.user(username)
    if entry is not None:
        log.info("user %s exists (uid %d): updating it", username, entry.uid)
        return _ensure_home(host, entry)
    planned = check_home(host, username)
    leftover = host.lstat(planned.home) is not None
    shell = "/bin/bash" if host.exists("/bin/bash") else "/bin/sh"
    group = ["-g", username] if host.accounts.group(username) is not None else ["-U"]
    extra = ["-G", admin] if admin else []
    host.run(["useradd", *host.root_option(), "-m", *group, *extra, "-s", shell, "--", username],
             timeout=120)
    created = host.accounts.user(username)
    if created is None:
        raise StepFailed(f"useradd reported success but {username} is not in /etc/passwd",
                         admin_username=username)
    log.info("created user %s (uid %d, home %s%s)", username, created.uid, created.home,
             f", in group {admin}" if admin else "")
    if leftover and created.home == planned.home:
        _take_over_home(host, created)
    return True


def _home_mode(host: Host) -> int:
    """The mode useradd gives a new home: ``HOME_MODE``, else ``0777 & ~UMASK`` (login.defs)."""
    defs = host.accounts.login_defs()
    for value, mask in ((defs.get("HOME_MODE"), False), (defs.get("UMASK", "022"), True)):
        try:
            number = int(value, 8) & 0o777
        except (TypeError, ValueError):
            continue
        return (0o777 & ~number) if mask else number
    return 0o755


def _take_over_home(host: Host, entry: PasswdEntry) -> None:
    """A home left behind by the image build (root's, checked before) becomes the user's; useradd
    leaves an existing home as it is.  Only the directory itself: what is in it stays as it is."""
    with host.open_dir(entry.home) as home:
        if home.stat().st_uid != 0:
            return
        home.set_owner_mode(_home_mode(host) & ~0o022, entry.uid, entry.gid)
    log.info("the existing home %s (root's, left by the image) now belongs to %s", entry.home,
             entry.name)


def _ensure_home(host: Host, entry: PasswdEntry) -> bool:
    if host.lexists(entry.home):
        return False
    parent, name = entry.home.rstrip("/").rsplit("/", 1)
    try:
        directory = host.open_dir(parent or "/")
    except FileNotFoundError:
        raise StepFailed(f"{parent} does not exist: cannot create {entry.name}'s home {entry.home}",
                         path=entry.home) from None
    with directory:
        directory.subdir(name, create_mode=0o700, uid=entry.uid, gid=entry.gid).close()
    log.info("created the missing home %s of %s", entry.home, entry.name)
    return True


def admin_group(host: Host, candidates) -> Optional[str]:
    """The first of ``candidates`` that exists in the root's ``/etc/group``."""
    return next((name for name in candidates if host.accounts.group(name) is not None), None)


def ensure_admin_group(host: Host, username: str, candidates) -> bool:
    group = admin_group(host, candidates)
    if group is None:
        log.warning("none of the admin groups %s exists: %s gets sudo rights from azprov's "
                    "sudoers drop-in only", ", ".join(candidates) or "(none configured)", username)
        return False
    if username in host.accounts.group(group).members:
        return False
    host.run(["usermod", *host.root_option(), "-a", "-G", group, "--", username], timeout=60)
    log.info("added %s to group %s", username, group)
    return True


def ensure_locked(host: Host, username: str) -> bool:
    field = host.accounts.password_field(username)
    if field is not None and field.startswith("!"):
        return False
    host.run(["usermod", *host.root_option(), "-L", "--", username], timeout=60)
    log.info("locked the password of %s (SSH keys only)", username)
    return True
