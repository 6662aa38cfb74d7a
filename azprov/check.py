"""``azprov check``: the pre-capture gate.  Exit 0 only when an image captured now would provision.

``azprov status`` describes; ``check`` decides.  Each check below returns the problems it finds,
each with the command that fixes it, and the command exits :data:`ExitCode.NOT_READY` (10) when
there is any, so the last step of a Packer, Image Builder or gallery build fails the build
instead of producing an image whose VMs sit in "creating".  It reads the image (``--root``) and
changes nothing; the only command it runs is the image's own ``azprov`` under its own
interpreter (``chroot`` for a tree), to prove that azprov.service could start at all.

The checks reuse what provisioning and deprovisioning decide with: the guards for other
provisioners, the configuration loader, deprovision's lists of host keys and leases, the state
and the record of provisioned admin users.

The last ones look for what would give every VM of the image the same way in, which azprov does
not repair on its own (they are the image's, not azprov's): root's password (locked by
``deprovision`` and on each new VM, reported all the same) and SSH keys, accounts with an empty
password, sudo rules for every account or read from elsewhere, and members of the admin groups
who can log in.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Tuple

from azprov import admins, agent_state, guards, network, sudoers, unit, waagent
from azprov import state as state_file
from azprov.errors import AzprovError, ExitCode, NotReadyForCapture
from azprov.host import COMMAND_PATH, READ_LIMIT, Host, passwords

log = logging.getLogger(__name__)

DEPROVISION = "sudo azprov deprovision --force"
KILL_SWITCH = "/etc/azprov/disabled"
KERNEL_KILL_SWITCH = "azprov=disabled"
# Where a kernel command line that every boot of the image gets is kept.
KERNEL_CMDLINE_FILES = ("/etc/default/grub", "/etc/default/grub.d/*.cfg", "/etc/kernel/cmdline",
                        "/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/boot/grub2/grubenv",
                        "/boot/loader/entries/*.conf")
MACHINE_IDS = ("/etc/machine-id", "/var/lib/dbus/machine-id")
ADMIN_GROUPS = ("sudo", "wheel", "admin")  # groups the distributions' sudoers give root
_KEY_TYPE = re.compile(r"^(ssh-|ecdsa-|sk-)")
# What the image's own interpreter must import for azprov.service to provision (azprov.cli is
# not listed: the self-test is run through it, as `PROGRAM check --self-test`).
SELF_TEST_MODULES = ("azprov.provision", "azprov.clients", "azprov.http",
                     "azprov.config", "azprov.wireserver", "azprov.imds", "requests",
                     "defusedxml.ElementTree")


@dataclass(frozen=True)
class Problem:
    check: str  # which check found it (a key of CHECKS)
    problem: str  # what is wrong, naming the file
    fix: str  # the command (or edit) that fixes it
    warning: bool = False  # said, but an image with it still provisions: not a reason to fail


Check = Callable[[Host, Optional[str]], List[Problem]]


def check_unit(host: Host, config_file: Optional[str]) -> List[Problem]:
    if unit.masked(host, unit.UNIT):
        return [Problem("unit", f"{unit.UNIT} is masked: it never starts", f"sudo systemctl unmask {unit.UNIT}")]
    if unit.unit_file(host) is None:
        return [Problem("unit", f"{unit.UNIT} is not installed (looked in {', '.join(unit.UNIT_DIRS)})",
                        "install the azprov package: sudo apt install ./azprov_*_all.deb "
                        "(or sudo dnf install ./azprov-*.noarch.rpm)")]
    if not unit.is_enabled(host):
        return [Problem("unit", f"{unit.UNIT} is disabled: VMs from this image would never provision",
                        DEPROVISION)]
    return []


def check_kill_switch(host: Host, config_file: Optional[str]) -> List[Problem]:
    problems = []
    if host.lexists(KILL_SWITCH):
        problems.append(Problem("kill_switch", f"{KILL_SWITCH} exists: azprov.service would not run",
                                f"sudo rm {KILL_SWITCH}"))
    pattern = re.compile(r"(^|[\s\"'])" + re.escape(KERNEL_KILL_SWITCH) + r"($|[\s\"'])")
    for wanted in KERNEL_CMDLINE_FILES:
        for path in host.glob(wanted):
            lines = (host.read_text(path) or "").splitlines()
            if any(pattern.search(line) for line in lines if not line.lstrip().startswith("#")):
                problems.append(Problem("kill_switch", f"{path} puts {KERNEL_KILL_SWITCH} on the kernel "
                                        "command line: azprov.service would not run",
                                        f"remove {KERNEL_KILL_SWITCH} from {path} (then update-grub or "
                                        "grub2-mkconfig where the file is grub's)"))
    return problems


def check_other_provisioners(host: Host, config_file: Optional[str]) -> List[Problem]:
    problems = []
    why = guards.waagent_provisions(host)
    if why:
        problems.append(Problem("other_provisioner", why + ": provisioning would be refused",
                                waagent.FIX))
    why = guards.cloud_init_provisions(host)
    if why:
        problems.append(Problem("other_provisioner", why + ": provisioning would be refused",
                                "sudo apt-get purge cloud-init (dnf remove cloud-init), or "
                                f"sudo touch {guards.CLOUD_INIT_DISABLED}"))
    return problems


def check_config(host: Host, config_file: Optional[str]) -> List[Problem]:
    from azprov.config import load_config

    try:
        load_config(host, config_file=config_file)
    except AzprovError as error:
        return [Problem("config", f"the configuration does not load: {error}",
                        "fix the file and key named; `azprov config` shows the result")]
    return []


def check_leftovers(host: Host, config_file: Optional[str]) -> List[Problem]:
    """What deprovision removes: state, host keys, leases, machine id."""
    from azprov import deprovision

    problems = []
    if host.lexists(state_file.STATE_FILE):
        problems.append(Problem("state", f"azprov's state {state_file.STATE_FILE} is still here: VMs "
                                "from this image would skip the parts already recorded", DEPROVISION))
    keys = deprovision.present(host, [deprovision.HOST_KEYS])
    if keys:
        problems.append(Problem("host_keys", f"SSH host keys left ({', '.join(keys)}): every VM from "
                                "this image would share them", DEPROVISION))
    for path in MACHINE_IDS:
        if host.is_link(path):
            continue  # Debian's /var/lib/dbus/machine-id -> /etc/machine-id
        text = host.read_text(path)
        if text and text.strip() and text.strip() != "uninitialized":
            problems.append(Problem("machine_id", f"{path} is not empty: every VM from this image would "
                                    "share one machine id (DHCP DUID, journal)", DEPROVISION))
    leases = deprovision.present(host, deprovision.LEASES)
    if leases:
        problems.append(Problem("leases", f"DHCP leases left ({', '.join(leases)}): new VMs would ask "
                                "for the build VM's address first", DEPROVISION))
    return problems


def check_hostname(host: Host, config_file: Optional[str]) -> List[Problem]:
    """A warning: the image still carries a machine's host name (the build VM's).  VMs whose
    provisioning disc names them set their name before the network; one named by IMDS alone
    sends this name in its first DHCP requests, and Azure DNS registers it."""
    from azprov import deprovision

    name = deprovision.real_hostname(host)
    if name is None:
        return []
    return [Problem("hostname", f"{deprovision.HOSTNAME_FILE} still names this machine ({name}): a VM "
                    "from this image that only IMDS names sends it to Azure DNS until azprov renames it",
                    DEPROVISION, warning=True)]


def check_agent_state(host: Host, config_file: Optional[str]) -> List[Problem]:
    """WALinuxAgent's and cloud-init's per-VM state (secrets, markers, extension directories)."""
    problems = []
    for agent in agent_state.AGENTS:
        left = agent_state.find(host, agent)
        if left:
            problems.append(Problem("agent_state", f"{agent} left the build VM's state: "
                                    f"{agent_state.describe(left)}: every VM from this image would carry "
                                    "them", DEPROVISION))
    return problems


def user_leftovers(host: Host, username: str) -> List[str]:
    """What is left of ``username`` in the image: account, home with keys, sudo rights."""
    left = []
    entry = host.accounts.user(username)
    if entry is not None:
        left.append(f"account (uid {entry.uid})")
    home = entry.home if entry is not None else f"/home/{username}"
    keys = f"{home.rstrip('/')}/.ssh/authorized_keys"
    if host.lexists(keys):
        left.append(f"SSH keys {keys}")
    elif entry is not None and host.lexists(home):
        left.append(f"home {home}")
    dropin = host.read_text(sudoers.DROPIN) or ""
    if username in sudoers.users(dropin):
        left.append(f"sudo rights in {sudoers.DROPIN}")
    return left


def check_admin_users(host: Host, config_file: Optional[str]) -> List[Problem]:
    problems = []
    for username in admins.provisioned(host, state_file.load(host)):
        left = user_leftovers(host, username)
        if left:
            problems.append(Problem("admin_user", f"the admin user {username} that azprov provisioned on "
                                    f"an earlier VM is still here ({', '.join(left)}): every VM from this "
                                    "image would let its key holder in",
                                    "sudo azprov deprovision --user --force"))
    return problems


def login_keys(text: Optional[str]) -> List[str]:
    """The lines of an authorized-keys file that give a shell: every key line but those behind a
    ``command="..."`` option (cloud images' "Please login as the user ..." lines for root)."""
    found = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not _KEY_TYPE.match(line):
            options = re.split(r"\s(?=ssh-|ecdsa-|sk-)", line, maxsplit=1)[0]
            if re.search(r'(^|,)command="', options):
                continue
        found.append(line)
    return found


def _keys_of(host: Host, home: str) -> Tuple[str, List[str]]:
    """The first authorized-keys file below ``home`` that lets a key in, and its lines."""
    for name in ("authorized_keys", "authorized_keys2"):
        path = f"{home.rstrip('/')}/.ssh/{name}"
        lines = login_keys(host.read_text(path))
        if lines:
            return path, lines
    return "", []


def check_root(host: Host, config_file: Optional[str]) -> List[Problem]:
    """Root's password and SSH keys: every VM from the image would share them."""
    problems = []
    field = host.accounts.password_field("root")
    if passwords.usable(field):
        what = ("an empty password (no password is asked where PAM allows nullok)" if passwords.empty(field)
                else "a password")
        problems.append(Problem("root", f"root has {what} in /etc/shadow: every VM from this image would "
                                "share it (serial console, su)",
                                f"{DEPROVISION} (it locks root's password), or sudo usermod -L root"))
    entry = host.accounts.user("root")
    path, lines = _keys_of(host, entry.home if entry else "/root")
    if lines:
        problems.append(Problem("root", f"{path} lets {len(lines)} SSH key(s) in as root: every VM from "
                                "this image would let their holders in (deprovision keeps root's keys)",
                                f"sudo rm {path}, if no VM should have them"))
    return problems


def check_passwords(host: Host, config_file: Optional[str]) -> List[Problem]:
    """Accounts other than root with an empty password field."""
    return [Problem("passwords", f"{name} has an empty password in /etc/shadow: it logs in without one "
                    "wherever PAM allows nullok (Debian's default), on every VM from this image",
                    f"sudo usermod -L {name}")
            for name, field in passwords.fields(host).items() if name != "root" and passwords.empty(field)]


def check_sudo(host: Host, config_file: Optional[str]) -> List[Problem]:
    """sudo rules for every account or read from elsewhere, and admin-group members who can log in
    (azprov's own admin users are the admin_user check's)."""
    problems = [Problem("sudo", f"{found.path}: {found.line[:200]!r}: {found.what}",
                        f"remove the line: sudo visudo -f {found.path}")
                for found in sudoers.audit(host)]
    provisioned = set(admins.provisioned(host, state_file.load(host)))
    shadow = passwords.fields(host)
    for group_name in ADMIN_GROUPS:
        group = host.accounts.group(group_name)
        for member in group.members if group else ():
            entry = host.accounts.user(member)
            if member in provisioned or entry is None or member == "root":
                continue
            ways = ["a password"] if passwords.usable(shadow.get(member)) else []
            path, _lines = _keys_of(host, entry.home)
            ways += [f"SSH keys in {path}"] if path else []
            if ways:
                problems.append(Problem("sudo", f"{member} is in group {group_name} (root through sudo) and "
                                        f"can log in ({', '.join(ways)}): so could whoever has them on "
                                        "every VM from this image",
                                        f"sudo userdel -r {member} (or sudo gpasswd -d {member} {group_name})"))
    return problems


def check_network(host: Host, config_file: Optional[str]) -> List[Problem]:
    return [Problem("network", f"{found.path} pins the network to MAC address {found.mac} "
                    f"({found.what}): VMs from this image (other MACs) would get no network",
                    network.FIX.get(found.kind, "replace it with DHCP on every NIC, whatever its MAC"))
            for found in network.mac_pinned(host)]


def _exec_start(host: Host) -> Optional[str]:
    """The program azprov.service starts, as its unit file and drop-ins say (last one wins)."""
    path = unit.unit_file(host)
    files = [path] if path else []
    for directory in unit.UNIT_DIRS:
        files += host.glob(f"{directory}/{unit.UNIT}.d/*.conf")
    program = None
    for name in files:
        for line in (host.read_text(name) or "").splitlines():
            key, _, value = line.strip().partition("=")
            if key.strip() == "ExecStart":
                words = value.split()
                program = words[0].lstrip("-@:+!") if words else None
    return program


def _interpreter(host: Host, program: str) -> List[str]:
    """The interpreter of ``program``'s ``#!`` line with ``-B`` (no byte-code written into the
    image), or nothing when it is not a Python script (then it is run as it is)."""
    head = (host.read_file(host.resolve(program), limit=READ_LIMIT) or b"")[:256]
    words = head.split(b"\n", 1)[0][2:].decode("utf-8", "replace").split() if head.startswith(b"#!") else []
    if words and os.path.basename(words[0]) == "env":
        words = words[1:]
    if not words or not os.path.basename(words[0]).startswith("python"):
        return []
    return [*words, "-B"]


def check_firewall(host: Host, config_file: Optional[str]) -> List[Problem]:
    """A warning: azprov-firewall.service is enabled and the rule is wanted ([wireserver]
    root_only, no WALinuxAgent setting its own), but the image has neither nft nor iptables
    where ``azprov firewall`` looks.  VMs still provision (the unit says so and exits 0), but
    every local user reaches the WireServer."""
    from azprov import firewall
    from azprov.config import load_config

    if not unit.wanted(host, firewall.UNIT) or unit.masked(host, firewall.UNIT):
        return []
    try:
        if not load_config(host, config_file=config_file).wireserver.root_only:
            return []
    except AzprovError:
        return []  # the config check says so
    if waagent.manages_firewall(host) or firewall.image_tools(host):
        return []
    return [Problem("firewall", f"{firewall.UNIT} is enabled but the image has neither nft nor iptables "
                    f"(looked in {', '.join(COMMAND_PATH.split(':'))}): it would only warn at every boot, "
                    "and every local user of a VM from this image could reach the WireServer (the goal "
                    "state; the VM's certificates, with a transport key of their own)",
                    "install nftables or iptables: sudo apt install nftables (dnf install nftables); or go "
                    f"without the rule: sudo systemctl disable {firewall.UNIT} and root_only = false in "
                    "[wireserver] of /etc/azprov/azprov.toml", warning=True)]


def check_python(host: Host, config_file: Optional[str]) -> List[Problem]:
    """The image's own azprov, under its own interpreter, imports everything provisioning needs."""
    program = _exec_start(host)
    if not program:
        if unit.unit_file(host) is None:
            return []  # the unit check says it is not installed
        return [Problem("python", f"{unit.UNIT} has no ExecStart", "reinstall the azprov package")]
    if not host.exists(program):
        return [Problem("python", f"{program} (the unit's ExecStart) is not in the image",
                        "install the azprov package, or fix ExecStart= with sudo systemctl edit azprov.service")]
    argv = [*_interpreter(host, program), program, "check", "--self-test"]
    if not host.live:
        argv = ["chroot", host.root, *argv]
    try:
        result = host.run(argv, timeout=120, check=False)
    except AzprovError as error:
        return [Problem("python", f"could not run {program} in the image: {error}",
                        "run azprov check as root on a machine of the image's architecture")]
    if result.returncode != 0 or "imports: ok" not in result.stdout:
        output = (result.stderr.strip() or result.stdout.strip()).splitlines()
        return [Problem("python", f"{program} cannot start under the image's interpreter (exit "
                        f"{result.returncode}: {output[-1][:300] if output else 'no output'})",
                        "install azprov's dependencies: sudo apt install python3-requests "
                        "python3-defusedxml (dnf install python3-requests python3-defusedxml)")]
    return []


def temp_disk_owner(host: Host, config_file: Optional[str]) -> Tuple[str, str]:
    """Who formats the temporary disk in this image: azprov, WALinuxAgent, ..., "none" or
    "conflict" (:func:`azprov.disks.owner.describe`), as check and status say it."""
    from azprov.config import load_config
    from azprov.disks import owner

    try:
        enabled = load_config(host, config_file=config_file).temp_disk.enabled
    except AzprovError:
        enabled = True
    return owner.describe(owner.owners(host, enabled))


def check_temp_disk(host: Host, config_file: Optional[str]) -> List[Problem]:
    """One owner for the temporary disk, and no fstab line that trips over a disk a new VM may
    not have (:mod:`azprov.disks`)."""
    from azprov.config import load_config
    from azprov.disks import fstab, owner

    try:
        settings = load_config(host, config_file=config_file).temp_disk
    except AzprovError:
        return []  # the config check says so
    problems = []
    found = owner.owners(host, settings.enabled)
    if len(found) > 1:
        problems.append(Problem("temp_disk", "more than one agent formats the temporary disk at boot: "
                                + "; ".join(f"{o.name} ({o.why})" for o in found),
                                "keep exactly one: " + "; or ".join(f"{o.name}: {o.fix}" for o in found[1:])))
    for entry, why in fstab.risky(host.read_text(fstab.FSTAB) or "", settings.mount_point):
        fix = (DEPROVISION + " (removes it)" if fstab.agent_line(entry)
               else f"remove line {entry.line} of {fstab.FSTAB}, or add nofail to its options")
        problems.append(Problem("temp_disk", f"{fstab.FSTAB} line {entry.line} ({entry.text.strip()!r}): {why}", fix))
    return problems


CHECKS: Tuple[Tuple[str, Check], ...] = (
    ("unit", check_unit),
    ("kill_switch", check_kill_switch),
    ("other_provisioner", check_other_provisioners),
    ("config", check_config),
    ("leftovers", check_leftovers),
    ("hostname", check_hostname),
    ("agent_state", check_agent_state),
    ("admin_user", check_admin_users),
    ("root", check_root),
    ("passwords", check_passwords),
    ("sudo", check_sudo),
    ("network", check_network),
    ("temp_disk", check_temp_disk),
    ("firewall", check_firewall),
    ("python", check_python),
)


def run_checks(host: Host, config_file: Optional[str] = None) -> List[Problem]:
    problems: List[Problem] = []
    for name, function in CHECKS:
        try:
            problems.extend(function(host, config_file))
        except AzprovError as error:  # an unreadable file is a reason not to capture, not a crash
            problems.append(Problem(name, f"could not check: {error}", "see the message"))
    return problems


def self_test() -> int:
    """``azprov check --self-test``: import what provisioning needs (run under the image's interpreter)."""
    import importlib

    for module in SELF_TEST_MODULES:
        importlib.import_module(module)
    print(f"imports: ok (Python {sys.version.split()[0]})")
    return 0


def failure(count: int, host: Host) -> dict:
    """The failure fields of ``--json`` (as every command's failure object has them)."""
    where = "this system" if host.live else host.root
    return NotReadyForCapture(f"an image captured now would not provision: {count} problem"
                              f"{'s' if count > 1 else ''} on {where}").failure_object()


def command(args, config, host: Host) -> int:
    """``azprov check [--root DIR] [--json]``."""
    if getattr(args, "self_test", False):
        return self_test()
    found = run_checks(host, getattr(args, "config", None))
    problems = [p for p in found if not p.warning]
    warnings = [p for p in found if p.warning]
    owner, why = temp_disk_owner(host, getattr(args, "config", None))
    if getattr(args, "json", False):
        verdict = {} if not problems else failure(len(problems), host)
        json.dump({**verdict, "root": host.root, "ready_for_capture": not problems,
                   "problems": [asdict(p) for p in problems],
                   "warnings": [asdict(p) for p in warnings],
                   "temp_disk_owner": {"owner": owner, "why": why}}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        where = "this system" if host.live else host.root
        print(f"temporary disk: owner {owner} ({why})")
        for problem in warnings:
            print(f"warning: {problem.problem}\n    fix: {problem.fix}")
        for problem in problems:
            print(f"problem: {problem.problem}\n    fix: {problem.fix}")
        print(f"ready for capture: yes ({where})" if not problems
              else f"ready for capture: no ({len(problems)} problem{'s' if len(problems) > 1 else ''} on {where})")
    return int(ExitCode.OK if not problems else ExitCode.NOT_READY)
