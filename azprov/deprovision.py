"""``azprov deprovision``: prepare this VM (or an image tree) for capture as a generalized image.

It re-enables azprov.service, removes azprov's state and provisioning history, its KVP
``PROVISIONING_REPORT`` record, the SSH host keys, the DHCP leases, WALinuxAgent's and
cloud-init's per-VM state and logs (:mod:`azprov.agent_state`; their configuration and packages
stay) and the machine id, resets the host name in ``/etc/hostname`` to ``localhost`` (so that no
VM made from the image sends the build VM's name to Azure DNS before azprov names it), and with
``--user`` every admin user azprov provisioned (home, sudoers line).  It locks root's password
(``usermod -L root``: an image root password would be shared by every VM; root's account, shell
and SSH keys stay; ``[deprovision] lock_root_password = false`` keeps it).  A plain run keeps the record
of those users (:mod:`azprov.admins`), so a later ``--user`` still finds them after the state is
gone; ``azprov check`` fails while one is present.
It lists what it will do and asks first (y/N on a terminal) unless ``--force``; without a
terminal and without ``--force`` it refuses.  With ``--json`` it never asks (``--force`` is
required) and prints one object saying what it did: the files removed, the admin users removed
and kept, the KVP records removed, the files emptied.

The machine id is truncated to an empty file, not deleted and not set to ``uninitialized``: at the
next boot systemd generates a new id and writes it (so no two VMs share DHCP DUIDs or journal
ids), but the boot does not count as systemd's "first boot", which would run ``preset-all`` (and
``systemd-firstboot`` where installed) over the admin's choice of enabled units.  azprov itself
does not depend on ``ConditionFirstBoot``: its unit is enabled again here, and its state keys on
the VM id.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from azprov import admins, agent_state, attempts, kvp, provisioning_data, tempdisk
from azprov import state as state_file
from azprov import unit
from azprov.disks import fstab
from azprov.errors import ConfirmationRequired, ExitCode, StepFailed
from azprov.host import Host, passwords
from azprov.leases import LEASE_FILES
from azprov.steps import host_keys
from azprov.steps import hostname as hostname_step

log = logging.getLogger(__name__)

HOST_KEYS = "/etc/ssh/ssh_host_*"
LEASES = tuple(pattern for _kind, pattern in LEASE_FILES)
MACHINE_ID = "/etc/machine-id"
HOSTNAME_FILE = "/etc/hostname"
NEUTRAL_HOSTNAME = "localhost"  # what no DHCP client sends, and no VM is called
DBUS_MACHINE_ID = "/var/lib/dbus/machine-id"
LOCK_WAIT = 5.0


@dataclass(frozen=True)
class Action:
    description: str
    run: Callable[[], object]
    removes: Tuple[str, ...] = ()  # the files it removes (for --json)
    user: Optional[str] = None  # the admin user it removes
    kvp_record: Optional[str] = None  # the KVP record it removes
    empties: Tuple[str, ...] = ()  # the files it truncates
    hostname_reset: Optional[str] = None  # the build VM's host name it replaces
    edits: Tuple[str, ...] = ()  # the files it rewrites (lines removed)


def _remove_all(host: Host, paths: List[str]) -> Callable[[], None]:
    def run() -> None:
        for path in paths:
            host.remove(path)
    return run


def present(host: Host, patterns) -> List[str]:
    found = []
    for pattern in patterns:
        found.extend(p for p in host.glob(pattern) if host.is_link(p) or not host.is_dir(p))
    return sorted(set(found))


def _dbus_copy(host: Host) -> bool:
    """``/var/lib/dbus/machine-id`` is a copy, not Debian's link to ``/etc/machine-id``: it
    would outlive the id."""
    return not host.is_link(DBUS_MACHINE_ID) and host.read_file(DBUS_MACHINE_ID) is not None


def _empty_machine_id(host: Host) -> None:
    host.write_file(MACHINE_ID, b"", mode=0o444)
    if _dbus_copy(host):
        host.remove(DBUS_MACHINE_ID)


def user_removal(host: Host, username: str) -> Action:
    """Remove the provisioned ``username``: account, home, mail spool, its sudoers line."""
    entry = host.accounts.user(username)
    if entry is not None:
        host.accounts.admin_name(username)  # never a system account, whatever the state says
        sharing = [u.name for u in host.accounts.users() if u.home == entry.home and u.name != username]
        if entry.home.rstrip("/") in ("", "/home") or sharing:
            raise StepFailed(f"{username}'s home {entry.home} is shared or a system directory; "
                             "remove the user by hand", admin_username=username)

    def run() -> None:
        if host.accounts.user(username) is not None:
            host.run(["userdel", *host.root_option(), "--force", "--remove", "--", username],
                     timeout=120, check=False)
            if host.accounts.user(username) is not None:
                raise StepFailed(f"userdel could not remove {username}", admin_username=username)
        admins.forget(host, [username])
        admins.grant_sudo(host)  # the drop-in: the users still remembered, or removed

    home = f", its home {entry.home}" if entry else " (already gone)"
    return Action(f"remove the admin user {username}{home} and its sudo rights", run, user=username)


def _rewrite_fstab(host: Host, text: str) -> None:
    info = host.lstat(fstab.FSTAB)
    host.write_file(fstab.FSTAB, text.encode(), mode=(info.st_mode & 0o7777) if info else 0o644)


def plan(host: Host, recorded: Optional[state_file.State], remove_user: bool,
         lock_root: bool = True) -> List[Action]:
    actions = []
    if remove_user:
        users = admins.provisioned(host, recorded)
        if not users:
            log.warning("no provisioned admin user is recorded: --user has nothing to remove")
        actions.extend(user_removal(host, username) for username in users)
    actions.append(Action(f"enable {unit.UNIT} so that the next boot provisions",
                          lambda: unit.enable(host)))
    if recorded is not None or host.lexists(state_file.STATE_FILE):
        which = f" (VM {recorded.vm_id})" if recorded else ""
        actions.append(Action(f"remove azprov's state {state_file.STATE_FILE}{which}",
                              lambda: state_file.clear(host), removes=(state_file.STATE_FILE,)))
    if host.lexists(attempts.HISTORY_FILE):
        actions.append(Action(f"remove the provisioning history {attempts.HISTORY_FILE}",
                              lambda: attempts.clear(host), removes=(attempts.HISTORY_FILE,)))
    if _kvp_report(host):
        actions.append(Action(f"remove the KVP {kvp.PROVISIONING_REPORT} record from {kvp.POOL_FILE}",
                              lambda: kvp.remove(host, kvp.PROVISIONING_REPORT),
                              kvp_record=kvp.PROVISIONING_REPORT))
    saved = [path for path in provisioning_data.SAVED if host.lexists(path)]
    if saved:
        actions.append(Action(f"remove what the provisioning disc and IMDS carried: {', '.join(saved)}",
                              _remove_all(host, saved), removes=tuple(saved)))
    keys = present(host, [HOST_KEYS])
    made_for = present(host, [host_keys.MARKER])  # which VM they were made for
    if keys or made_for:
        actions.append(Action(f"remove the SSH host keys ({len(keys)} files in /etc/ssh)"
                              + (f" and {host_keys.MARKER}" if made_for else ""),
                              _remove_all(host, keys + made_for), removes=tuple(keys + made_for)))
    leases = present(host, LEASES)
    if leases:
        actions.append(Action(f"remove DHCP leases: {', '.join(leases)}", _remove_all(host, leases),
                              removes=tuple(leases)))
    name = real_hostname(host)
    if name is not None:
        actions.append(Action(f"reset the host name {name} in {HOSTNAME_FILE} to {NEUTRAL_HOSTNAME} "
                              "(no VM from the image registers this VM's name in Azure DNS)",
                              lambda: _reset_hostname(host), hostname_reset=name))
    actions.extend(_agent_state(host))
    fstab_text = host.read_text(fstab.FSTAB)
    if fstab_text is not None:
        kept_text, removed = fstab.without_agent_lines(fstab_text)
        if removed:
            lines = "; ".join(f"{entry.text.strip()!r} ({fstab.agent_line(entry)})" for entry in removed)
            actions.append(Action(f"remove the temporary-disk lines other agents left in {fstab.FSTAB}: {lines}",
                                  lambda: _rewrite_fstab(host, kept_text), edits=(fstab.FSTAB,)))
    if host.lexists(tempdisk.RECORD):
        actions.append(Action(f"remove this VM's temporary disk record {tempdisk.RECORD}",
                              _remove_all(host, [tempdisk.RECORD]), removes=(tempdisk.RECORD,)))
    if lock_root and passwords.usable(host.accounts.password_field("root")):
        actions.append(Action("lock root's password (usermod -L root; its account and SSH keys stay)",
                              lambda: passwords.lock(host, "root")))
    actions.append(Action(f"empty {MACHINE_ID} (systemd makes a new machine id at the next boot)",
                          lambda: _empty_machine_id(host), empties=(MACHINE_ID,),
                          removes=(DBUS_MACHINE_ID,) if _listed_dbus_copy(host) else ()))
    return actions


def real_hostname(host: Host) -> Optional[str]:
    """The image's static host name when it names a machine (not empty, not ``localhost``), or
    None: the name every VM from the image would send in its first DHCP request."""
    name = hostname_step.current_hostname(host).lower()
    if not name or name in hostname_step.LOOPBACK_NAMES or name.endswith(".localhost"):
        return None
    return name


def _reset_hostname(host: Host) -> None:
    """``/etc/hostname`` says ``localhost``: systemd sets that name at boot, and DHCP clients
    send no name for it (systemd-networkd) or a name Azure DNS ignores; the running system keeps
    its name until it shuts down."""
    host.write_file(HOSTNAME_FILE, (NEUTRAL_HOSTNAME + "\n").encode(), mode=0o644)


def _agent_state(host: Host) -> List[Action]:
    """WALinuxAgent's and cloud-init's per-VM state and logs (:mod:`azprov.agent_state`)."""
    actions = []
    for agent in agent_state.AGENTS:
        left = agent_state.find(host, agent)
        if left:
            actions.append(Action(f"remove {agent}'s per-VM state and logs ({agent_state.describe(left)})",
                                  lambda left=left: agent_state.remove(host, left),
                                  removes=tuple(item.path for item in left)))
    return actions


def _listed_dbus_copy(host: Host) -> bool:
    """For the plan's list only: an unsafe path there is refused when the action runs."""
    try:
        return _dbus_copy(host)
    except StepFailed:
        return False


def summary(host: Host, done: List[Action], kept: List[str]) -> dict:
    """``deprovision --json``: what was done, removed, emptied and kept."""
    return {
        "root": host.root,
        "done": [action.description for action in done],
        "removed_files": sorted({path for action in done for path in action.removes}),
        "removed_admin_users": [action.user for action in done if action.user],
        "removed_kvp_records": [action.kvp_record for action in done if action.kvp_record],
        "emptied_files": [path for action in done for path in action.empties],
        "edited_files": [path for action in done for path in action.edits],
        "kept_admin_users": kept,
        "hostname_reset": next((a.hostname_reset for a in done if a.hostname_reset), None),
        "unit_enabled": True,
    }


def _kvp_report(host: Host) -> bool:
    try:
        return any(key == kvp.PROVISIONING_REPORT for key, _ in kvp.read_pool(host))
    except (StepFailed, OSError) as exc:
        log.warning("cannot read %s: %s", kvp.POOL_FILE, exc)
        return False


def _confirm(force: bool, as_json: bool = False) -> bool:
    if force:
        return True
    if as_json:
        raise ConfirmationRequired("deprovision --json does not ask: pass --force")
    if not sys.stdin.isatty():
        raise ConfirmationRequired("deprovision changes this system for capture and needs "
                                   "confirmation: run it on a terminal, or pass --force")
    answer = input("Proceed? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def command(args, config, host: Host) -> int:
    """``azprov deprovision [--user] [--force] [--root DIR] [--json]``."""
    as_json = bool(getattr(args, "json", False))
    if as_json and not args.force:  # refused before anything is read
        _confirm(args.force, as_json)
    with state_file.acquire(host, LOCK_WAIT):
        recorded = state_file.load(host)
        actions = plan(host, recorded, args.user, config.deprovision.lock_root_password)
        kept = [] if args.user else [name for name in admins.provisioned(host, recorded)
                                     if host.accounts.user(name) is not None]
        if not as_json:
            where = "this system" if host.live else host.root
            print(f"azprov deprovision will, on {where}:")
            for action in actions:
                print(f"  - {action.description}")
            if kept:
                print(f"  - keep the record of the admin user{'s' if len(kept) > 1 else ''} "
                      f"{', '.join(kept)}: `azprov deprovision --user` removes "
                      f"{'them' if len(kept) > 1 else 'it'}, and `azprov check` fails until then")
            sys.stdout.flush()
        if not _confirm(args.force, as_json):
            print("cancelled: nothing was changed")
            return int(ExitCode.FAILURE)
        for action in actions:
            log.info("deprovision: %s", action.description)
            action.run()
    if as_json:
        json.dump(summary(host, actions, kept), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("done: capture the image now (shut down first); VMs created from it provision again")
    return 0
