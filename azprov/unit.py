"""azprov's own unit: disabled after a successful run, enabled again by ``deprovision``.

With systemd running this root (root ``/``) ``systemctl`` does it; for an image tree, or a host
without systemd as PID 1, the ``multi-user.target.wants`` link is removed or created directly,
pointing at the unit file where the image has it (as ``systemctl enable`` would).
"""

from __future__ import annotations

import logging
from typing import Optional

from azprov.errors import StepFailed
from azprov.host import Host

log = logging.getLogger(__name__)

UNIT = "azprov.service"
WANTS_DIR = "/etc/systemd/system/multi-user.target.wants"
WANTS_LINK = f"{WANTS_DIR}/{UNIT}"
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
ETC_WANTS = "/etc/systemd/system/*.wants"


def wanted(host: Host, name: str) -> bool:
    """Whether the unit ``name`` is enabled: a ``.wants`` link to it in /etc/systemd/system
    (dangling in an image tree whose unit is elsewhere too), as ``systemctl enable`` leaves it."""
    return any(host.lexists(f"{wants}/{name}") for wants in host.glob(ETC_WANTS))


def masked(host: Host, name: str) -> bool:
    """Whether the unit ``name`` is masked (a link to /dev/null in /etc/systemd/system)."""
    return host.link_target(f"/etc/systemd/system/{name}") == "/dev/null"


def unit_file(host: Host) -> Optional[str]:
    """Where the image has azprov.service (the first of UNIT_DIRS holding it), or None."""
    for directory in UNIT_DIRS:
        path = f"{directory}/{UNIT}"
        if host.exists(path) and host.resolve(path) != "/dev/null":  # not a masked unit
            return path
    return None


def is_enabled(host: Host) -> bool:
    if host.probes.systemd_running():
        result = host.run(["systemctl", "is-enabled", UNIT], timeout=30, check=False)
        return result.stdout.strip() in ("enabled", "enabled-runtime", "alias")
    return host.lexists(WANTS_LINK)


def check(host: Host) -> None:
    """Refuse, before anything changes, a ``.wants`` directory :func:`disable` could not use."""
    if not host.probes.systemd_running():
        host.check_writable(WANTS_LINK, parents_only=True)


def disable(host: Host) -> bool:
    """Make sure the unit does not start at boot any more; True if that changed something."""
    if host.probes.systemd_running():
        if not is_enabled(host):
            return False
        # --no-reload: only the [Install] links go; the unit file did not change, so the
        # manager need not reload.  A reload here would run while the first boot is still
        # starting units (sshd, logins) and stall PID 1's job queue for 0.1-0.5 s.  Until the
        # next reload "systemctl status" may still say "enabled" in its Loaded line;
        # "systemctl is-enabled" reads the links and says "disabled" at once.
        host.run(["systemctl", "disable", "--no-reload", UNIT], timeout=60)
        log.info("disabled %s", UNIT)
        return True
    changed = host.remove(WANTS_LINK)
    if changed:
        log.info("disabled %s (removed %s)", UNIT, WANTS_LINK)
    return changed


def enable(host: Host) -> bool:
    """Make the unit start at the next boot; True if that changed something."""
    if host.probes.systemd_running():
        if is_enabled(host):
            return False
        host.run(["systemctl", "enable", UNIT], timeout=60)
        log.info("enabled %s", UNIT)
        return True
    target = unit_file(host)
    if target is None:
        raise StepFailed(f"{UNIT} is not installed in {host.root} (looked in {', '.join(UNIT_DIRS)})")
    directory_path, name = WANTS_LINK.rsplit("/", 1)
    with host.open_dir(directory_path, create_mode=0o755) as directory:
        changed = directory.symlink(target, name)
    if changed:
        log.info("enabled %s (%s -> %s)", UNIT, WANTS_LINK, target)
    return changed


def is_running(host: Host) -> bool:
    """True while the unit has a start job queued (early in boot, before network-online.target),
    systemd is starting it, or its main process still runs (a Type=notify unit is "active" from
    READY=1 on, while azprov still reports Ready)."""
    if not host.probes.systemd_running():
        return False
    jobs = host.run(["systemctl", "list-jobs", "--no-legend", "--no-pager", UNIT], timeout=30, check=False)
    if any(UNIT in line.split() for line in jobs.stdout.splitlines()):
        return True
    result = host.run(["systemctl", "show", "-p", "ActiveState", "-p", "MainPID", UNIT],
                      timeout=30, check=False)
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return values.get("ActiveState") in ("activating", "deactivating", "reloading") or \
        values.get("MainPID", "0").strip() not in ("", "0")
