"""``azprov fabric boot IMAGE``: would this image provision on Azure?  Boot it and see.

The image (raw, qcow2 or a fixed VHD, as Packer and Azure produce them; never written: the VM
runs on a qcow2 overlay) boots in QEMU (:mod:`azprov.fabric.vm`) against the emulated fabric at
the real addresses, with a generated SSH key (plus the scenario's keys, password and custom data,
when given) on the IMDS document, the goal state and the provisioning disc.  Then:

1. wait for the first health report: Ready (accepted by the emulator) or NotReady (its
   description carries azprov's failure reason); when the guest has booted (a login prompt on
   the serial console, or sshd answers) and the fabric has heard nothing for
   :data:`SILENT_GRACE` s, the provisioning agent did not run;
2. after Ready, log in over SSH with the generated key;
3. wait for azprov to finish (``azprov.service`` has no main process any more), read the host
   name and ask systemd whether azprov disabled its unit, so that later boots skip it.

The verdict (:class:`Verdict`) says which of these held, the seconds from power-on to Ready and to
the SSH login, the host name each DHCP request carried, and on a failure the serial console's
last lines.  The image would provision when Ready was accepted, no NotReady was sent, the login
worked, the host name is the scenario's computer name and azprov disabled its unit: only then is
the exit code 0.  The VM is then powered off with the ACPI button, so the kept disk (``--keep``)
holds what the guest wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

from azprov.errors import ExitCode, ImageWouldNotProvision, NotRoot, VmUnavailable
from azprov.fabric.qemu import missing_tools
from azprov.fabric.vm import AZPROV_UNIT, VirtualMachine, VmSetup, health_reports
from azprov.fabric.vmnet import VmSetupError, run

DEFAULT_TIMEOUT = 600.0  # s from power-on to the first health report (TCG is slow)
SILENT_GRACE = 20.0  # s after the guest has booted with no request at the fabric: the agent did not run
LOGIN_TIMEOUT = 60.0  # s from Ready to a working login
FINISH_TIMEOUT = 120.0  # s from the login to azprov's end (after Ready it only tidies up)
SHUTDOWN_TIMEOUT = 120.0  # s for the ACPI power-off before the VM is killed
UNIT = AZPROV_UNIT
CONSOLE_LINES = 40


@dataclass
class Verdict:
    image: str
    format: str
    firmware: str
    would_provision: bool = False
    ready: bool = False
    seconds_to_ready: Optional[float] = None
    failure: Optional[str] = None  # why not, in one sentence
    reported_failure: Optional[str] = None  # a NotReady report's description
    ssh_login: bool = False
    seconds_to_login: Optional[float] = None
    hostname: Optional[str] = None
    expected_hostname: str = ""
    unit_disabled: Optional[bool] = None  # None: not asked (an earlier stage failed)
    dhcp_hostnames: List[str] = field(default_factory=list)
    requests: int = 0
    console_tail: List[str] = field(default_factory=list)
    workdir: Optional[str] = None

    def text(self) -> str:
        lines = [f"image:        {self.image} ({self.format}, {self.firmware.upper()})"]
        if self.ready:
            lines.append(f"Ready:        accepted {self.seconds_to_ready:.0f} s after power-on")
        else:
            lines.append("Ready:        not reported" + (f" (NotReady: {self.reported_failure})"
                                                          if self.reported_failure else ""))
        if self.ssh_login:
            lines.append(f"SSH login:    worked with the generated key ({self.seconds_to_login:.0f} s after power-on)")
        else:
            lines.append("SSH login:    did not work" if self.ready else "SSH login:    not tried")
        if self.hostname is not None:
            lines.append(f"host name:    {self.hostname} (expected {self.expected_hostname})")
        if self.unit_disabled is not None:
            lines.append(f"unit:         {UNIT} " + ("disabled by azprov (later boots skip it)"
                                                     if self.unit_disabled else "still enabled"))
        if self.dhcp_hostnames:
            lines.append(f"DHCP names:   {', '.join(self.dhcp_hostnames)}")
        lines.append(f"fabric:       {self.requests} requests")
        if self.would_provision:
            lines.append("verdict:      this image would provision on Azure")
        else:
            lines.append(f"verdict:      this image would NOT provision: {self.failure}")
            if self.console_tail:
                lines.append("serial console (last lines):")
                lines.extend(f"  | {line}" for line in self.console_tail)
        if self.workdir:
            lines.append(f"kept:         {self.workdir}")
        return "\n".join(lines)


def default_scenario(public_key: str) -> dict:
    name = f"azprov-boot-{uuid.uuid4().hex[:6]}"
    return {"vm_id": str(uuid.uuid4()), "computer_name": name, "vm_name": f"{name}-vm",
            "admin_username": "azureuser", "incarnation": 1, "public_keys": [public_key]}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FAILED_UNIT = re.compile(r"FAILED\s*\] Failed to start (\S+)")


def _console_lines(text: str) -> List[str]:
    return [line.rstrip() for line in _ANSI.sub("", text).replace("\r", "").splitlines() if line.strip()]


def _failed_units(text: str) -> List[str]:
    """Units the serial console says failed to start (systemd's status lines), once each."""
    found: List[str] = []
    for line in _console_lines(text):
        match = _FAILED_UNIT.search(line)
        if match and match.group(1).rstrip(".") not in found:
            found.append(match.group(1).rstrip("."))
    return found


def _console_tail(text: str, lines: int = CONSOLE_LINES) -> List[str]:
    clean = _console_lines(text)
    return [line.encode("ascii", "replace").decode()[:200] for line in clean[-lines:]]


_BOOTED = re.compile(r"(^|\n)\S+ login: |Reached target .{0,40}Multi-User System")


def _booted(vm: VirtualMachine, user: str, key: Path) -> bool:
    """The guest has finished booting: the serial console shows a login prompt or systemd's
    "Reached target Multi-User System" (both come after the provisioning agent's start-up: the
    target is ordered after what it wants, gettys after systemd-user-sessions), or sshd answers."""
    if _BOOTED.search(vm.console()):
        return True
    result = vm.ssh(user, key, "true", timeout=15)
    return result.returncode == 0 or "Permission denied" in result.stderr


def watch(vm: VirtualMachine, verdict: Verdict, user: str, key: Path, timeout: float) -> None:
    """Boot ``vm`` and fill ``verdict`` in (the VM is still running when this returns)."""
    qemu = vm.boot()
    started = qemu.started
    next_probe = time.monotonic() + 20
    booted_at: Optional[float] = None
    while time.monotonic() - started < timeout:
        records = vm.records()
        ready = [r for r in health_reports(records, "Ready") if 200 <= r.get("status", 0) < 300]
        not_ready = health_reports(records, "NotReady")
        if not_ready:
            verdict.reported_failure = not_ready[0]["report"].get("description") or "(no description)"
            verdict.failure = f"azprov reported NotReady: {verdict.reported_failure}"
            return
        if ready:
            verdict.ready = True
            verdict.seconds_to_ready = time.monotonic() - started
            break
        if not qemu.running:
            verdict.failure = "the VM powered off or crashed before reporting Ready" + _qemu_said(qemu)
            return
        now = time.monotonic()
        if now >= next_probe:
            next_probe = now + 5
            if not records and _booted(vm, user, key):
                booted_at = booted_at or now
            if booted_at is not None and not records and now - booted_at >= SILENT_GRACE:
                verdict.failure = ("the VM has booted but nothing contacted the fabric: the provisioning "
                                   "agent did not run (is azprov.service enabled? systemctl is-enabled azprov)")
                return
        time.sleep(0.5)
    else:
        verdict.failure = (f"no health report within {timeout:.0f} s "
                           f"({len(vm.records())} requests reached the fabric)")
        return
    login = vm.wait_for_ssh(user, key, LOGIN_TIMEOUT)
    if login is None or login.returncode != 0:
        why = (login.stderr.strip().splitlines() or ["no answer"])[-1] if login is not None else "no attempt"
        failed = _failed_units(vm.console())
        verdict.failure = (f"Ready was reported, but an SSH login with the key failed: {why}"
                           + (f"; the serial console shows these units failed to start: {', '.join(failed)}"
                              if failed else ""))
        return
    verdict.ssh_login = True
    verdict.seconds_to_login = time.monotonic() - started
    if not vm.wait_for_azprov(user, key, FINISH_TIMEOUT):
        verdict.failure = f"azprov was still running {FINISH_TIMEOUT:.0f} s after the login (systemctl status {UNIT})"
        return
    result = vm.ssh(user, key, "hostname")
    verdict.hostname = result.stdout.strip() if result.returncode == 0 else None
    if verdict.hostname != verdict.expected_hostname:
        verdict.failure = f"the host name is {verdict.hostname!r}, not the computer name {verdict.expected_hostname!r}"
        return
    enabled = vm.ssh(user, key, f"systemctl is-enabled {UNIT}").stdout.strip()
    verdict.unit_disabled = enabled == "disabled"
    if not verdict.unit_disabled:
        verdict.failure = (f"azprov finished but systemctl is-enabled {UNIT} says {enabled or 'nothing'!r}: "
                           "every later boot would run it again")
        return
    verdict.would_provision = True


def _qemu_said(qemu) -> str:
    """QEMU's own last error line (a refused option, a missing file ...), if it wrote one."""
    try:
        lines = [line.strip() for line in qemu.stderr.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f" (QEMU exited {qemu.process.returncode}: {lines[-1][:300]})" if lines else ""


def boot_image(image: Path, *, scenario: Optional[dict] = None, firmware: Optional[str] = None,
               kernel: Optional[Path] = None, initrd: Optional[Path] = None, append: str = "",
               timeout: float = DEFAULT_TIMEOUT, memory_mib: int = 1024, accel: str = "tcg",
               keep: Optional[Path] = None, extra_args: tuple = ()) -> Verdict:
    """Boot ``image`` against the emulator and return the verdict (the tools must be present)."""
    from azprov.fabric.disc import iso9660_image, ovf_env
    from azprov.fabric.scenario import Scenario

    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="azprov-fabric-boot-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    try:
        key = workdir / "login-key"
        for stale in (key, key.with_suffix(".pub")):
            if stale.exists():
                stale.unlink()
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "azprov-fabric-boot", "-f", str(key)])
        public = key.with_suffix(".pub").read_text().strip()
        data = dict(scenario) if scenario else default_scenario(public)
        keys = list(data.get("public_keys") or [])
        data["public_keys"] = keys + [public] if public not in keys else keys
        data.setdefault("vm_id", str(uuid.uuid4()))
        data.setdefault("computer_name", default_scenario(public)["computer_name"])
        data.setdefault("admin_username", "azureuser")
        disc = workdir / "provisioning-disc.iso"
        fd = os.open(disc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(iso9660_image(ovf_env(Scenario.from_dict(data))))
        setup = VmSetup(image=image, scenario=data, disc=disc, firmware=firmware, kernel=kernel,
                        initrd=initrd, append=append, memory_mib=memory_mib, accel=accel,
                        extra_args=extra_args)
        with VirtualMachine(setup, workdir / "vm") as vm:
            verdict = Verdict(image=str(image), format=vm.image.format, firmware=vm.firmware,
                              expected_hostname=data["computer_name"],
                              workdir=str(workdir) if keep else None)
            try:
                watch(vm, verdict, data["admin_username"], key, timeout)
            finally:
                verdict.requests = len(vm.records())
                verdict.dhcp_hostnames = [request.name for request in vm.dhcp_names()]
                if not verdict.would_provision:
                    verdict.console_tail = _console_tail(vm.console())
                vm.shutdown(timeout=SHUTDOWN_TIMEOUT)
        return verdict
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def command(args, config) -> int:
    """``azprov fabric boot IMAGE [--scenario FILE] ...``: print the verdict (with ``--json`` one
    object, which also has ``reason`` and ``exit_code``); exit 0 only when the image would
    provision, else 10 (``image_would_not_provision``)."""
    firmware = None if args.firmware == "auto" else args.firmware
    missing = missing_tools(firmware or "bios")
    if missing:
        raise VmUnavailable(f"azprov fabric boot needs QEMU and its helpers: install {' '.join(missing)} "
                            f"(Debian/Ubuntu: apt-get install {' '.join(missing)})")
    if os.geteuid() != 0:
        raise NotRoot("azprov fabric boot must run as root: it makes a network namespace with a tap "
                      "and a DHCP server for the VM")
    scenario = None
    if args.scenario:
        from azprov.fabric.scenario import load_scenario, scenario_data

        load_scenario(args.scenario)  # checks it
        scenario = scenario_data(args.scenario)
    try:
        verdict = boot_image(Path(args.image), scenario=scenario, firmware=firmware,
                             kernel=Path(args.kernel) if args.kernel else None,
                             initrd=Path(args.initrd) if args.initrd else None,
                             append=args.append or "", timeout=args.timeout, memory_mib=args.memory,
                             accel=args.accel, keep=Path(args.keep) if args.keep else None)
    except VmSetupError as exc:
        raise VmUnavailable(f"could not boot {args.image}: {exc}") from None
    failed = None if verdict.would_provision else ImageWouldNotProvision(verdict.failure or "")
    if args.json:
        document = asdict(verdict)
        document.update({"reason": failed.reason if failed else None,
                         "exit_code": int(failed.exit_code if failed else ExitCode.OK)})
        print(json.dumps(document, indent=2))
    else:
        print(verdict.text())
    sys.stdout.flush()
    return int(failed.exit_code) if failed else 0

