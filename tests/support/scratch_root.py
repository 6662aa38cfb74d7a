"""A minimal Debian-12-like image tree to provision with ``azprov provision --root DIR``.

Enough for the real ``useradd --root``/``usermod --root``, ``visudo -cf`` and ``ssh-keygen -A -f``
to work on it, with azprov's unit installed and enabled through its ``.wants`` link, and SSH host
keys absent (a generalized image).  Used by the tests and by the demo script::

    from tests.support.scratch_root import make_scratch_root, snapshot
    root = make_scratch_root("/tmp/image")
    before = snapshot(root)

``snapshot`` records every path with its type, mode, owner and content hash, so two runs can be
compared for "nothing changed".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from typing import Dict, Iterable, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT_SOURCE = os.path.join(REPO, "systemd", "azprov.service")
UNIT_PATH = "usr/lib/systemd/system/azprov.service"
WANTS_LINK = "etc/systemd/system/multi-user.target.wants/azprov.service"
SHADOW_GID = 42
SUDO_GID = 27

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
games:x:5:60:games:/usr/games:/usr/sbin/nologin
man:x:6:12:man:/var/cache/man:/usr/sbin/nologin
lp:x:7:7:lp:/var/spool/lpd:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
news:x:9:9:news:/var/spool/news:/usr/sbin/nologin
uucp:x:10:10:uucp:/var/spool/uucp:/usr/sbin/nologin
proxy:x:13:13:proxy:/bin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
backup:x:34:34:backup:/var/backups:/usr/sbin/nologin
list:x:38:38:Mailing List Manager:/var/list:/usr/sbin/nologin
irc:x:39:39:ircd:/run/ircd:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin
messagebus:x:100:107::/nonexistent:/usr/sbin/nologin
sshd:x:101:65534::/run/sshd:/usr/sbin/nologin
"""

GROUPS = [
    ("root", 0), ("daemon", 1), ("bin", 2), ("sys", 3), ("adm", 4), ("tty", 5), ("disk", 6),
    ("lp", 7), ("mail", 8), ("news", 9), ("uucp", 10), ("man", 12), ("proxy", 13), ("kmem", 15),
    ("dialout", 20), ("cdrom", 24), ("sudo", SUDO_GID), ("audio", 29), ("www-data", 33),
    ("backup", 34), ("operator", 37), ("list", 38), ("irc", 39), ("src", 40),
    ("shadow", SHADOW_GID), ("utmp", 43), ("video", 44), ("plugdev", 46), ("staff", 50),
    ("games", 60), ("users", 100), ("messagebus", 107), ("systemd-network", 998),
    ("nogroup", 65534),
]

LOGIN_DEFS = """\
MAIL_DIR        /var/mail
UMASK           022
HOME_MODE       0700
PASS_MAX_DAYS   99999
PASS_MIN_DAYS   0
PASS_WARN_AGE   7
UID_MIN         1000
UID_MAX         60000
SYS_UID_MIN     100
SYS_UID_MAX     999
GID_MIN         1000
GID_MAX         60000
SYS_GID_MIN     100
SYS_GID_MAX     999
USERGROUPS_ENAB yes
ENCRYPT_METHOD  SHA512
"""

SUDOERS = """\
Defaults\tenv_reset
Defaults\tmail_badpass
Defaults\tsecure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Defaults\tuse_pty
root\tALL=(ALL:ALL) ALL
%sudo\tALL=(ALL:ALL) ALL
@includedir /etc/sudoers.d
"""

SSHD_CONFIG = """\
# Debian 12's default, shortened.
Include /etc/ssh/sshd_config.d/*.conf
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem\tsftp\t/usr/lib/openssh/sftp-server
"""

HOSTS = """\
127.0.0.1\tlocalhost
127.0.1.1\tdebian

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
"""

UNIT_FALLBACK = """\
[Unit]
Description=azprov first-boot provisioning for Azure
[Service]
Type=notify
ExecStart=/usr/bin/azprov provision
[Install]
WantedBy=multi-user.target
"""


def _write(root: str, path: str, text: str, mode: int = 0o644, gid: int = 0) -> str:
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), mode=0o755, exist_ok=True)
    with open(full, "w") as handle:
        handle.write(text)
    os.chmod(full, mode)
    if os.geteuid() == 0:
        os.chown(full, 0, gid)
    return full


def _mkdir(root: str, path: str, mode: int = 0o755) -> None:
    full = os.path.join(root, path)
    os.makedirs(full, mode=0o755, exist_ok=True)
    os.chmod(full, mode)


def make_scratch_root(
    root: str,
    *,
    users: Iterable[Tuple[str, int]] = (),
    waagent: bool = False,
    waagent_conf: Optional[str] = None,
    cloud_init: bool = False,
    cloud_cfg: Optional[str] = None,
    hostname: str = "debian",
) -> str:
    """Build the image tree at ``root`` (created if needed); returns ``root``.

    ``users``: extra ``(name, uid)`` accounts (with a same-named group and a home).
    ``waagent``: WALinuxAgent installed, its unit enabled, ``/etc/waagent.conf`` from
    ``waagent_conf`` (default: provisioning enabled).  ``cloud_init``: cloud-init installed with
    ``/etc/cloud/cloud.cfg`` from ``cloud_cfg`` (default: datasource list with Azure).
    """
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    for path in ("usr/bin", "usr/sbin", "usr/lib", "etc", "var/lib", "var/mail", "var/cache",
                 "run", "home", "dev", "proc", "sys", "usr/share"):
        _mkdir(root, path)
    _mkdir(root, "root", 0o700)
    _mkdir(root, "tmp", 0o1777)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        if not os.path.lexists(os.path.join(root, link)):
            os.symlink(target, os.path.join(root, link))
    for shell in ("usr/bin/bash", "usr/bin/sh", "usr/sbin/nologin"):
        _write(root, shell, "#!/bin/false\n", 0o755)

    passwd = PASSWD
    groups = list(GROUPS)
    for name, uid in users:
        passwd += f"{name}:x:{uid}:{uid}::/home/{name}:/bin/bash\n"
        groups.append((name, uid))
    _write(root, "etc/passwd", passwd)
    _write(root, "etc/group", "".join(f"{name}:x:{gid}:\n" for name, gid in groups))
    names = [line.split(":")[0] for line in passwd.splitlines()]
    shadow = "".join(f"{name}:{'*' if name != 'root' else '!'}:19500:0:99999:7:::\n" for name in names)
    _write(root, "etc/shadow", shadow, 0o640, SHADOW_GID)
    _write(root, "etc/gshadow", "".join(f"{name}:*::\n" for name, _ in groups), 0o640, SHADOW_GID)
    for name, uid in users:
        _mkdir(root, f"home/{name}", 0o755)
        if os.geteuid() == 0:
            os.chown(os.path.join(root, "home", name), uid, uid)

    _write(root, "etc/login.defs", LOGIN_DEFS)
    _write(root, "etc/default/useradd", "SHELL=/bin/sh\n")
    _write(root, "etc/skel/.bashrc", "# ~/.bashrc\n")
    _write(root, "etc/skel/.profile", "# ~/.profile\n")
    _write(root, "etc/shells", "/bin/sh\n/bin/bash\n/usr/bin/bash\n")
    _write(root, "etc/sudoers", SUDOERS, 0o440)
    _write(root, "etc/sudoers.d/README", "# drop-ins: mode 0440\n", 0o440)
    _write(root, "etc/ssh/sshd_config", SSHD_CONFIG)
    _mkdir(root, "etc/ssh/sshd_config.d")
    _write(root, "usr/sbin/sshd", "#!/bin/false\n", 0o755)
    _write(root, "etc/hosts", HOSTS)
    _write(root, "etc/hostname", hostname + "\n")
    _write(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444)
    _write(root, "etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
    _write(root, "var/lib/dhcp/dhclient.eth0.leases",
           "lease {\n  interface \"eth0\";\n  option unknown-245 a8:3f:81:10;\n}\n")
    _mkdir(root, "var/lib/systemd")

    try:
        with open(UNIT_SOURCE) as handle:
            unit = handle.read()
    except OSError:
        unit = UNIT_FALLBACK
    _write(root, UNIT_PATH, unit)
    _mkdir(root, os.path.dirname(WANTS_LINK))
    if not os.path.lexists(os.path.join(root, WANTS_LINK)):
        os.symlink("/" + UNIT_PATH, os.path.join(root, WANTS_LINK))

    if waagent:
        _write(root, "usr/sbin/waagent", "#!/bin/false\n", 0o755)
        _write(root, "usr/lib/systemd/system/walinuxagent.service",
               "[Service]\nExecStart=/usr/sbin/waagent -daemon\n[Install]\nWantedBy=multi-user.target\n")
        link = os.path.join(root, "etc/systemd/system/multi-user.target.wants/walinuxagent.service")
        if not os.path.lexists(link):
            os.symlink("/usr/lib/systemd/system/walinuxagent.service", link)
        _write(root, "etc/waagent.conf", waagent_conf if waagent_conf is not None
               else "Provisioning.Agent=auto\nProvisioning.DeleteRootPassword=y\n")
    if cloud_init:
        _write(root, "usr/bin/cloud-init", "#!/bin/false\n", 0o755)
        _write(root, "etc/cloud/cloud.cfg", cloud_cfg if cloud_cfg is not None
               else "datasource_list: [ Azure, None ]\n")
    return root


LAUNCHER = """#!/usr/bin/python3
import sys
from azprov.cli import main
sys.exit(main())
"""
# What azprov imports at run time, copied from the interpreter running the tests.
RUNTIME_PACKAGES = ("requests", "urllib3", "idna", "charset_normalizer", "certifi", "defusedxml")


def _link(source: str, dest: str) -> None:
    """Hard-link ``source`` to ``dest`` (a copy across file systems)."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def install_python(root: str, *, without: Iterable[str] = ()) -> str:
    """Give the tree a real interpreter: this machine's ``python3`` with the shared libraries it
    loads (``ldd``), its standard library, azprov (this checkout) and its dependencies in
    ``/usr/lib/python3/dist-packages``, and ``/usr/bin/azprov`` as the .deb installs it.  Enough
    for ``chroot ROOT /usr/bin/azprov ...`` to run (root only).  ``without``: packages left out.
    Files are hard links where possible: never write through them."""
    import importlib
    import subprocess

    def with_libraries(binary: str) -> None:
        libs = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        for path in [binary] + [word for word in libs.split() if word.startswith("/")]:
            dest = os.path.join(root, path.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if not os.path.lexists(dest):
                _link(os.path.realpath(path), dest)

    interpreter = os.path.realpath("/usr/bin/python3")
    with_libraries(interpreter)
    python3 = os.path.join(root, "usr/bin/python3")
    if not os.path.lexists(python3):
        os.symlink(os.path.basename(interpreter), python3)
    # The image's interpreter is this machine's /usr/bin/python3, whatever runs the tests (the
    # suite also runs under other Pythons): its own standard library, asked of it.
    stdlib = subprocess.run([interpreter, "-I", "-c", "import sysconfig; print(sysconfig.get_paths("
                             "vars={'installed_base': '/usr', 'base': '/usr'})['stdlib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    dest = os.path.join(root, stdlib.lstrip("/"))
    if not os.path.isdir(dest):
        shutil.copytree(stdlib, dest, symlinks=True, copy_function=_link,
                        ignore=shutil.ignore_patterns("test", "idlelib", "tkinter", "site-packages",
                                                      "dist-packages", "__pycache__"))
    site = os.path.join(root, "usr/lib/python3/dist-packages")
    os.makedirs(site, exist_ok=True)
    skip = set(without)
    for name in RUNTIME_PACKAGES + ("azprov",):
        if name in skip or os.path.exists(os.path.join(site, name)):
            continue
        source = os.path.join(REPO, "azprov") if name == "azprov" else \
            os.path.dirname(importlib.import_module(name).__file__)
        shutil.copytree(source, os.path.join(site, name), copy_function=_link,
                        ignore=shutil.ignore_patterns("__pycache__"))
        for directory, _, files in os.walk(source):
            for extension in (f for f in files if f.endswith(".so")):
                with_libraries(os.path.join(directory, extension))
    _write(root, "usr/bin/azprov", LAUNCHER, 0o755)
    return root


Entry = Tuple[str, int, int, int, str]


def snapshot(root: str, *, exclude: Iterable[str] = ()) -> Dict[str, Entry]:
    """``{relative path: (type, mode, uid, gid, sha256 or link target)}`` of the whole tree."""
    skip = set(exclude)
    result: Dict[str, Entry] = {}
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root)
            if rel in skip:
                continue
            info = os.lstat(full)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                entry = ("link", mode, info.st_uid, info.st_gid, os.readlink(full))
            elif stat.S_ISDIR(info.st_mode):
                entry = ("dir", mode, info.st_uid, info.st_gid, "")
            else:
                with open(full, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                entry = ("file", mode, info.st_uid, info.st_gid, digest)
            result[rel] = entry
    return result


def diff(before: Dict[str, Entry], after: Dict[str, Entry]) -> Dict[str, Tuple]:
    """What changed between two snapshots: ``{path: (before or None, after or None)}``."""
    return {
        path: (before.get(path), after.get(path))
        for path in sorted(set(before) | set(after))
        if before.get(path) != after.get(path)
    }


def owner_mode_changes(before: Dict[str, Entry], after: Dict[str, Entry],
                       allowed: Iterable[str] = ()) -> Dict[str, Tuple]:
    """Paths in both snapshots whose type, mode or owner changed, except those matching one of
    the ``allowed`` glob patterns: ``{path: ((type, mode, uid, gid) before, ... after)}``."""
    import fnmatch

    patterns = list(allowed)
    changes = {}
    for path in sorted(set(before) & set(after)):
        old, new = before[path][:4], after[path][:4]
        if old != new and not any(fnmatch.fnmatchcase(path, p) for p in patterns):
            changes[path] = (old, new)
    return changes


def comparable(entries: Dict[str, Entry]) -> Dict[str, Entry]:
    """A snapshot with the parts that differ between equivalent runs blanked: host key material
    (random), the state file (its timestamp), the attempt history (times, and a killed run's
    attempt) and the KVP pool (the report's timestamp)."""
    result = {}
    for path, (kind, mode, uid, gid, content) in entries.items():
        if path.startswith("etc/ssh/ssh_host_"):
            content = "<host key>"
        elif path == "var/lib/azprov/state.json":
            content = "<state>"
        elif path == "var/lib/azprov/attempts.json":
            content = "<attempts>"
        elif path == "var/lib/hyperv/.kvp_pool_1":
            content = "<kvp pool>"
        result[path] = (kind, mode, uid, gid, content)
    return result


def read_state(root: str) -> Optional[dict]:
    """``var/lib/azprov/state.json`` of ``root`` as a dict, or None."""
    import json

    try:
        with open(os.path.join(root, "var/lib/azprov/state.json")) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
