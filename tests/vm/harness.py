"""Scenarios, boots and disk checks shared by the VM tests.

A test boots :class:`azprov.fabric.vm.VirtualMachine` on the cached image
(:mod:`tests.vm.image`), waits for what it needs in the emulator's request log or over SSH, powers
the VM off and reads the disk back: :func:`read_disk` gives a :class:`DiskState` (the account
files, the host name, the admin's keys and sudoers drop-in, azprov's state and whether its unit is
still enabled), and :func:`check_converged` asserts a provisioned VM is whole.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from azprov.fabric.vm import VirtualMachine, VmSetup, health_reports
from tests.vm import image as vmimages
from tests.vm.image import VmImage

# Every VM test module's pytestmark: vm, and boot too (slow and root-only like the nspawn boot
# tests, so ``-m "not boot"`` leaves them out).
MARKS = [pytest.mark.vm, pytest.mark.boot]
TIMEOUT = float(os.environ.get("AZPROV_VM_TIMEOUT", "300"))  # seconds from QEMU start to Ready
ENABLE_LINK = "/etc/systemd/system/multi-user.target.wants/azprov.service"
STATE = "/var/lib/azprov/state.json"


def scenario(name: str, user: str, keys: List[str], incarnation: int = 1,
             password: Optional[str] = None) -> dict:
    """One VM for the emulator: its own ids, name, admin user, keys (and password)."""
    data = {
        "description": f"vm test: {name}",
        "vm_id": str(uuid.uuid4()),
        "vm_name": f"{name}-resource",
        "computer_name": name,
        "admin_username": user,
        "incarnation": incarnation,
        "container_id": str(uuid.uuid4()),
        "instance_id": f"{uuid.uuid4()}._{name}-resource",
        "public_keys": keys,
    }
    if password is not None:
        data["admin_password"] = password
    return data


# QEMU's accelerator: tcg (software; KVM does not boot a kernel on the project's machines), or kvm.
ACCEL = os.environ.get("AZPROV_VM_ACCEL", "tcg")


def setup(image: VmImage, data: dict, disc: Optional[Path] = None, append: str = "", **more) -> VmSetup:
    return VmSetup(image=image.disk, scenario=data, disc=disc, kernel=image.kernel, initrd=image.initrd,
                   append=f"{image.append} {append}".strip(), accel=ACCEL, **more)


def ovf_disc(data: dict, directory: Path, udf: bool = True) -> Path:
    """The provisioning disc of ``data``: UDF (genisoimage -udf, as Azure writes UDF) or the
    emulator's own ISO9660 image."""
    from azprov.fabric.disc import iso9660_image, ovf_env
    from azprov.fabric.scenario import Scenario

    directory.mkdir(parents=True, exist_ok=True)
    image = directory / "provisioning-disc.iso"
    xml = ovf_env(Scenario.from_dict(data))
    if not udf:
        image.write_bytes(iso9660_image(xml))
        return image
    source = directory / "disc-source"
    source.mkdir(exist_ok=True)
    (source / "ovf-env.xml").write_bytes(xml)
    try:
        vmimages.run(["genisoimage", "-quiet", "-udf", "-o", str(image), str(source)])
    finally:
        (source / "ovf-env.xml").unlink()
    return image


def ready(vm: VirtualMachine) -> List[dict]:
    return health_reports(vm.records(), "Ready")


def wait_ready(vm: VirtualMachine, timeout: float = TIMEOUT) -> None:
    if not vm.wait_until(lambda: bool(ready(vm)), timeout):
        raise AssertionError(f"no Ready report within {timeout:.0f} s; requests: "
                             f"{[(r.get('endpoint'), r.get('status')) for r in vm.records()]}\n"
                             f"--- console ---\n{vm.console()[-6000:]}")


def explain(vm: VirtualMachine) -> str:
    return (f"requests: {[(r.get('endpoint'), r.get('status')) for r in vm.records()]}\n"
            f"--- console ---\n{vm.console()[-5000:]}")


@dataclass
class DiskState:
    """What the VM's disk holds after power-off (read with debugfs, no mount)."""

    fsck: subprocess.CompletedProcess
    files: Dict[str, Optional[str]] = field(default_factory=dict)
    sudoers: Dict[str, str] = field(default_factory=dict)  # /etc/sudoers.d/NAME -> text
    enabled: bool = False  # azprov.service's multi-user.target.wants link is there

    def table(self, path: str) -> Dict[str, List[str]]:
        """A colon-separated account file as name -> fields."""
        text = self.files.get(path) or ""
        return {line.split(":")[0]: line.split(":") for line in text.splitlines() if line.strip()}


def read_disk(vm: VirtualMachine, user: str) -> DiskState:
    raw = vm.raw_disk()
    try:
        return disk_state(raw, user)
    finally:
        raw.unlink()


def disk_state(filesystem, user: str) -> DiskState:
    """:class:`DiskState` of an ext4 file system: a raw disk that is one, or ``"DISK?offset=N"``
    (e2fsprogs' own syntax) for a partition of a raw disk."""
    state = DiskState(fsck=vmimages.fsck(filesystem))
    for path in ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/hostname",
                 "/etc/sudoers", STATE, f"/home/{user}/.ssh/authorized_keys"):
        state.files[path] = vmimages.read_file(filesystem, path)
    for name in vmimages.listdir(filesystem, "/etc/sudoers.d"):
        state.sudoers[name] = vmimages.read_file(filesystem, f"/etc/sudoers.d/{name}") or ""
    state.enabled = vmimages.exists(filesystem, ENABLE_LINK)
    state.files["keys"] = "\n".join(sorted(vmimages.listdir(filesystem, "/etc/ssh")))
    return state


def check_accounts_parse(disk: DiskState) -> None:
    """passwd/shadow/group/gshadow: every line has its field count, names are unique, every
    passwd user has a shadow line."""
    for path, count in (("/etc/passwd", 7), ("/etc/shadow", 9), ("/etc/group", 4), ("/etc/gshadow", 4)):
        text = disk.files[path]
        assert text is not None, f"{path} is missing"
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, f"{path} is empty"
        for line in lines:
            assert len(line.split(":")) == count, f"{path}: damaged line {line!r}"
        names = [line.split(":")[0] for line in lines]
        assert len(names) == len(set(names)), f"{path}: duplicate names"
    assert set(disk.table("/etc/passwd")) == set(disk.table("/etc/shadow"))
    assert set(disk.table("/etc/group")) == set(disk.table("/etc/gshadow"))


def check_sudoers_parse(disk: DiskState, workdir: Path) -> None:
    """Every sudoers file on the disk passes ``visudo -c``."""
    for name, text in [("sudoers", disk.files["/etc/sudoers"] or ""), *disk.sudoers.items()]:
        path = workdir / f"check-{name}"
        path.write_text(text)
        try:
            result = subprocess.run(["visudo", "-c", "-f", str(path)], capture_output=True, text=True,
                                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        finally:
            path.unlink()
        assert result.returncode == 0, f"sudoers file {name} does not parse: {result.stdout}{result.stderr}"


def password_matches(password: str, shadow_hash: str) -> bool:
    """Whether ``shadow_hash`` (an /etc/shadow hash: yescrypt, SHA-512 ...) is one of
    ``password``: the host's libcrypt hashes it again with the hash's own salt (what the
    ``crypt`` module did before Python 3.13 dropped it)."""
    libcrypt = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    again = libcrypt.crypt(password.encode(), shadow_hash.encode())
    return again is not None and again.decode() == shadow_hash


def check_converged(disk: DiskState, data: dict, workdir: Path) -> None:
    """A provisioned VM, whole: a clean file system, account files that parse with the admin in
    them and in sudo, its key, the host name, azprov's state for this VM, the unit disabled."""
    assert disk.fsck.returncode == 0, f"e2fsck -fn: {disk.fsck.stdout}{disk.fsck.stderr}"
    check_accounts_parse(disk)
    check_sudoers_parse(disk, workdir)
    user = data["admin_username"]
    assert user in disk.table("/etc/passwd"), "the admin user is not in /etc/passwd"
    assert user in disk.table("/etc/group")["sudo"][3].split(","), "the admin is not in the sudo group"
    assert any(user in text for text in disk.sudoers.values()), f"no sudoers drop-in names {user}"
    keys = [line for line in (disk.files[f"/home/{user}/.ssh/authorized_keys"] or "").splitlines()
            if line.strip() and not line.startswith("#")]
    assert keys == list(data["public_keys"]), keys
    assert (disk.files["/etc/hostname"] or "").strip() == data["computer_name"]
    state = json.loads(disk.files[STATE] or "null")
    assert isinstance(state, dict) and state.get("vm_id") == data["vm_id"], state
    assert not disk.enabled, "azprov.service is still enabled"
    assert "ssh_host_ed25519_key" in disk.files["keys"].split(), disk.files["keys"]


# --- power cuts --------------------------------------------------------------------------------

# Where to cut the power: a predicate on the VM, checked every 0.1 s from power-on.
CUT_POINTS = {
    "goalstate": lambda vm: any(r.get("endpoint") == "goalstate" for r in vm.records()),
    "user": lambda vm: "azprov: step user: done" in vm.console(),
    "ready": lambda vm: bool(health_reports(vm.records())),
}


@dataclass
class CutTrial:
    """One power cut and the boots after it."""

    point: str
    cut_at: Optional[float] = None  # s after power-on
    cut_records: List[dict] = field(default_factory=list)  # what reached the fabric before the cut
    next_records: List[dict] = field(default_factory=list)  # the normal boot after it
    silent_records: List[dict] = field(default_factory=list)  # the boot after that
    login: Optional[subprocess.CompletedProcess] = None
    session: Optional[subprocess.CompletedProcess] = None
    disk: Optional[DiskState] = None
    consoles: List[str] = field(default_factory=list)


def power_cut_trial(image: VmImage, data: dict, key: Path, directory: Path, point: str,
                    delay: Optional[float] = None) -> CutTrial:
    """Boot, SIGKILL QEMU at ``point`` (a :data:`CUT_POINTS` name, or ``"random"``: ``delay``
    seconds after power-on), boot normally (Ready, an SSH login with the key), power off, boot
    once more (nothing may reach the fabric), power off, read the disk."""
    trial = CutTrial(point)
    disc = ovf_disc(data, directory / "disc", udf=False)
    with VirtualMachine(setup(image, data, disc=disc), directory) as vm:
        qemu = vm.boot()
        if point == "random":
            assert delay is not None
            vm.wait_until(lambda: time.monotonic() - qemu.started >= delay, delay + 5, poll=0.05)
        else:
            reached = vm.wait_until(lambda: CUT_POINTS[point](vm), TIMEOUT, poll=0.1)
            assert reached, f"power cut point {point} never came:\n{explain(vm)}"
        vm.power_cut()
        trial.cut_at = time.monotonic() - qemu.started
        trial.cut_records = vm.records()
        trial.consoles.append(vm.console())
        vm.boot()
        trial.login = vm.wait_for_ssh(data["admin_username"], key, TIMEOUT)
        vm.wait_for_azprov(data["admin_username"], key, TIMEOUT)
        trial.next_records = vm.records()[len(trial.cut_records):]
        trial.session = vm.ssh(data["admin_username"], key, "hostname; sudo -n true && echo sudo-ok")
        trial.consoles.append(vm.console())
        vm.shutdown()
        before = len(vm.records())
        vm.boot()
        vm.wait_for_ssh(data["admin_username"], key, TIMEOUT)
        trial.silent_records = vm.records()[before:]
        trial.consoles.append(vm.console())
        vm.shutdown()
        trial.disk = read_disk(vm, data["admin_username"])
    return trial


def check_trial(trial: CutTrial, data: dict, workdir: Path) -> None:
    """After the cut and a normal boot, the VM converged (see :func:`check_converged`): Ready
    accepted, never NotReady, the login and host name right, nothing sent on the boot after."""
    every = trial.cut_records + trial.next_records
    context = f"cut at {trial.point} ({trial.cut_at:.1f} s)"
    assert not health_reports(every, "NotReady"), f"{context}: NotReady was sent: {health_reports(every)}"
    accepted = [r for r in health_reports(every, "Ready") if r.get("status") == 200 and not r.get("violations")]
    assert accepted, f"{context}: no Ready accepted; requests {[(r.get('endpoint'), r.get('status')) for r in every]}"
    assert trial.login is not None and trial.login.returncode == 0, f"{context}: no SSH login after the cut: {trial.login}"
    assert trial.session is not None and trial.session.stdout.split() == [data["computer_name"], "sudo-ok"], trial.session
    assert trial.silent_records == [], f"{context}: the boot after sent {trial.silent_records}"
    assert trial.disk is not None
    check_converged(trial.disk, data, workdir)


# --- the key and password scenarios (Debian 12 and 13) --------------------------------------------

def key_vm_run(image: VmImage, data: dict, key: Path, workdir: Path) -> dict:
    """Two boots of one key VM: provision (then an ACPI power-off), boot again; what each showed."""
    user = data["admin_username"]
    disc = ovf_disc(data, workdir / "disc", udf=False)
    outcome: dict = {}
    with VirtualMachine(setup(image, data, disc=disc), workdir) as vm:
        vm.boot()
        wait_ready(vm)
        outcome["login"] = vm.wait_for_ssh(user, key, 120)
        vm.wait_for_azprov(user, key, TIMEOUT)
        outcome["session"] = vm.ssh(user, key, "id -un; hostname; sudo -n true && echo sudo-ok;"
                                    " systemctl is-enabled azprov.service || true")
        outcome["first_records"] = vm.records()
        outcome["first_clean"] = vm.shutdown()
        vm.boot()
        outcome["second_login"] = vm.wait_for_ssh(user, key, TIMEOUT)
        outcome["second_session"] = vm.ssh(user, key, "systemctl show -P ActiveState azprov.service; hostname")
        outcome["second_records"] = vm.records()[len(outcome["first_records"]):]
        outcome["second_clean"] = vm.shutdown()
        outcome["disk"] = read_disk(vm, user)
        outcome["dhcp"] = vm.dhcp_names()
        outcome["console"] = vm.console(1)
    return outcome


def check_ready_once(records: List[dict], data: dict) -> None:
    """Exactly one health report, Ready, accepted, echoing the served ids; no violation."""
    ready = health_reports(records, "Ready")
    assert len(ready) == 1, [(r["endpoint"], r.get("report")) for r in records]
    (report,) = ready
    assert report["status"] == 200 and report["violations"] == []
    assert report["report"]["incarnation"] == data["incarnation"]
    assert report["report"]["container_id"] == data["container_id"]
    assert report["report"]["instance_id"] == data["instance_id"]
    assert health_reports(records) == ready, "a report other than Ready was sent"
    assert [r for r in records if r.get("violations")] == []


def check_key_login(outcome: dict, data: dict) -> None:
    assert outcome["login"] is not None and outcome["login"].returncode == 0, outcome["login"]
    session = outcome["session"]
    assert session.returncode == 0, session.stderr
    assert session.stdout.split() == [data["admin_username"], data["computer_name"], "sudo-ok", "disabled"]


def check_second_boot(outcome: dict, data: dict) -> None:
    assert outcome["first_clean"] and outcome["second_clean"], "the VM did not power off on ACPI power-off"
    assert outcome["second_login"] is not None and outcome["second_login"].returncode == 0
    assert outcome["second_session"].stdout.split() == ["inactive", data["computer_name"]]
    assert outcome["second_records"] == []


def check_dhcp_names(outcome: dict, data: dict) -> None:
    names = [request.name for request in outcome["dhcp"]]
    assert len(names) >= 2, f"dnsmasq logged {names} ('client provides name:' lines)"
    assert set(names) == {data["computer_name"]}, names


# The password VM's look around after logging in with the password (one line each).
PASSWORD_PROBE = (
    "id -un; hostname; if grep -qw '^udf' /proc/modules; then echo udf-loaded; else echo udf-absent; fi;"
    " findmnt -n /dev/sr0 >/dev/null && echo sr0-mounted || echo sr0-not-mounted;"
    " sudo -n true 2>/dev/null && echo sudo-without-password || echo sudo-needs-password")


def password_vm_run(image: VmImage, data: dict, password: str, workdir: Path, kernel_option: str = "") -> dict:
    """A password VM (no key) from a UDF provisioning disc: Ready, a password login and the probe.
    ``kernel_option``: e.g. ``modprobe.blacklist=udf``."""
    user = data["admin_username"]
    disc = ovf_disc(data, workdir / "disc", udf=True)
    stranger = workdir / "stranger-key"
    vmimages.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)])
    with VirtualMachine(setup(image, data, disc=disc, append=kernel_option), workdir) as vm:
        vm.boot()
        wait_ready(vm)
        found = {"login": vm.wait_for_ssh(user, None, 120, password=password)}
        vm.wait_for_azprov(user, None, TIMEOUT, password=password)
        found["probe"] = vm.ssh(user, None, PASSWORD_PROBE, password=password)
        found["key_login"] = vm.ssh(user, stranger, "true")
        found["records"] = vm.records()
        found["console"] = vm.console()
        vm.shutdown()
    return found


# azprov's line on the serial console (journal+console) saying how it read the disc
READ_LINE = re.compile(r"read ovf-env\.xml \(\d+ bytes\) from /dev/sr0 \((\w+)\)")


def check_password_vm(found: dict, data: dict, module: str) -> None:
    """Ready once; the password login; the udf module as asked (``udf-absent``/``udf-loaded``),
    the disc not mounted, sudo asking the password; azprov read the disc with its UDF reader; a
    key the VM was never given does not log in."""
    ready = health_reports(found["records"], "Ready")
    assert len(ready) == 1 and ready[0]["status"] == 200, found["records"]
    assert health_reports(found["records"]) == ready
    assert found["login"] is not None and found["login"].returncode == 0, found["login"]
    probe = found["probe"]
    assert probe.returncode == 0, (probe.stdout, probe.stderr)
    assert probe.stdout.split("\n")[:5] == [data["admin_username"], data["computer_name"], module,
                                            "sr0-not-mounted", "sudo-needs-password"], probe.stdout
    assert READ_LINE.findall(found["console"]) == ["udf"], "azprov did not read the disc with its UDF reader"
    assert found["key_login"].returncode != 0, "a key the VM was never given logged in"


def in_parallel(jobs: Dict[str, Callable[[], object]]) -> Dict[str, object]:
    """Run each job on a thread of its own (VMs booting at the same time); a job's exception is
    its result, for the test to raise."""
    import threading

    results: Dict[str, object] = {}

    def run(name: str, job) -> None:
        try:
            results[name] = job()
        except BaseException as exc:  # reported by the test, not lost in the thread
            results[name] = exc

    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def result(results: Dict[str, object], name: str):
    value = results[name]
    if isinstance(value, BaseException):
        raise value
    return value
