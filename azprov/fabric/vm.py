"""An emulated Azure VM: QEMU on a disk image, the fabric emulator and a DHCP server around it.

``with VirtualMachine(setup, workdir) as vm:`` makes the VM's network (:mod:`.vmnet`), starts
``azprov fabric serve`` inside that namespace at 168.63.129.16:80 and 169.254.169.254:80 with the
scenario, puts a qcow2 overlay over the image (:mod:`.qemu`) and boots it.  The image runs its
own, unmodified configuration: it finds the fabric at the real addresses through DHCP.

Everything is read from outside the guest: :meth:`VirtualMachine.records` (the emulator's JSON
request log), :meth:`VirtualMachine.dhcp_names` (the host name each DHCP request carried),
:meth:`VirtualMachine.console` (the serial console), :meth:`VirtualMachine.ssh` (a login through
the tap, from inside the namespace), :meth:`VirtualMachine.disk_file` after power-off
(``debugfs`` on a raw copy of the overlay, for images whose root is ext4).  :meth:`boot` starts
the same disk again (a reboot or the boot after a power cut), :meth:`power_cut` SIGKILLs QEMU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from azprov.fabric.qemu import ImageInfo, Qemu, QemuSpec, inspect_image, make_overlay
from azprov.fabric.vmnet import (GUEST, IMDS, WIRESERVER, DhcpRequest, Opened, VmNetwork, VmSetupError, run,
                                 stop_process)

AZPROV_UNIT = "azprov.service"
SSH_OPTIONS = ("-F", "/dev/null", "-o", "IdentitiesOnly=yes",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR")


@dataclass
class VmSetup:
    """What to boot and against which fabric."""

    image: Path
    scenario: dict  # the fabric emulator's scenario (docs/fabric-emulator.md)
    disc: Optional[Path] = None  # the provisioning disc image, on the IDE CD-ROM
    firmware: Optional[str] = None  # bios or uefi; None: from the image (GPT + ESP: uefi)
    kernel: Optional[Path] = None
    initrd: Optional[Path] = None
    append: str = ""
    memory_mib: int = 1024
    accel: str = "tcg"
    extra_args: Sequence[str] = field(default_factory=tuple)  # e.g. a SCSI disk at a LUN


class FabricProcess:
    """``azprov fabric serve`` in the namespace, with this Python and this azprov."""

    def __init__(self, network: VmNetwork, scenario: dict, workdir: Path) -> None:
        self.scenario_path = workdir / "scenario.json"
        self.log_path = workdir / "fabric.jsonl"
        self.stderr_path = workdir / "fabric.stderr"
        self.scenario_path.write_text(json.dumps(scenario, indent=2) + "\n")
        os.chmod(self.scenario_path, 0o600)  # it may hold the admin password
        package_parent = str(Path(__file__).resolve().parents[2])
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": package_parent}
        argv = network.exec_argv([sys.executable, "-m", "azprov", "fabric", "serve",
                                  "--wireserver", f"{WIRESERVER}:80", "--imds", f"{IMDS}:80",
                                  "--scenario", str(self.scenario_path), "--log", str(self.log_path)])
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=stderr, env=env)
        deadline = time.monotonic() + 30
        while "azprov fabric: WireServer on" not in self.stderr_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise VmSetupError(f"the fabric emulator did not start: {self.stderr_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def records(self) -> List[dict]:
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text().splitlines()
        found = []
        for line in lines:
            try:
                found.append(json.loads(line))
            except ValueError:  # the last line, being written
                pass
        return found

    def stop(self) -> None:
        stop_process(self.process)


def health_reports(records: Sequence[dict], state: Optional[str] = None) -> List[dict]:
    return [r for r in records if r.get("endpoint") == "health" and "report" in r
            and (state is None or r["report"].get("state") == state)]


class VirtualMachine(Opened):
    """One VM: its network, fabric, disk overlay and (while booted) QEMU process."""

    def __init__(self, setup: VmSetup, workdir: Path) -> None:
        self.setup = setup
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.image: ImageInfo = inspect_image(setup.image)
        self.firmware = setup.firmware or self.image.firmware
        self.overlay = self.workdir / "disk.qcow2"
        self.network: Optional[VmNetwork] = None
        self.fabric: Optional[FabricProcess] = None
        self.qemu: Optional[Qemu] = None
        self.boots = 0

    # --- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        self.network = VmNetwork(self.workdir)
        self.network.open()
        self.fabric = FabricProcess(self.network, self.setup.scenario, self.workdir)
        make_overlay(self.image, self.overlay)

    def boot(self) -> Qemu:
        """Start QEMU on the VM's disk (the first boot, or the next one after a power-off)."""
        if self.qemu is not None and self.qemu.running:
            raise VmSetupError("the VM is still running")
        assert self.network is not None
        self.boots += 1
        vm_id = self.setup.scenario.get("vm_id") or "00000000-0000-4000-8000-000000000001"
        spec = QemuSpec(
            disk=self.overlay, console=self.workdir / f"console-{self.boots}.log",
            monitor=self.workdir / "monitor.sock", tap=self.network.tap, vm_id=vm_id,
            firmware=self.firmware, disc=self.setup.disc, kernel=self.setup.kernel,
            initrd=self.setup.initrd, append=self.setup.append, memory_mib=self.setup.memory_mib,
            accel=self.setup.accel, efi_vars=self.workdir / "efi-vars.fd",
            extra_args=self.setup.extra_args)
        self.qemu = Qemu(spec, self.network.exec_argv([]), self.workdir / "qemu.stderr")
        return self.qemu

    def power_cut(self) -> None:
        if self.qemu is not None:
            self.qemu.kill()

    def shutdown(self, timeout: float = 90) -> bool:
        """ACPI power-off; killed if the guest does not stop in time.  True if it stopped by itself."""
        if self.qemu is None or not self.qemu.running:
            return True
        clean = self.qemu.powerdown(timeout)
        if not clean:
            self.qemu.kill()
        return clean

    def close(self) -> None:
        if self.qemu is not None and self.qemu.running:
            self.qemu.kill()
        if self.fabric is not None:
            self.fabric.stop()
        if self.network is not None:
            self.network.close()

    # --- what happened -----------------------------------------------------------------------

    def records(self) -> List[dict]:
        return self.fabric.records() if self.fabric is not None else []

    def dhcp_names(self) -> List[DhcpRequest]:
        return self.network.dhcp_names() if self.network is not None else []

    def console(self, boot: Optional[int] = None) -> str:
        path = self.workdir / f"console-{boot or self.boots}.log"
        try:
            return path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_until(self, predicate: Callable[[], bool], timeout: float, poll: float = 0.25) -> bool:
        """Poll ``predicate`` until it holds (True), QEMU exits or ``timeout`` s pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self.qemu is not None and not self.qemu.running:
                return predicate()
            time.sleep(poll)
        return False

    def ssh(self, user: str, key: Optional[Path], command: str, timeout: float = 60,
            password: Optional[str] = None) -> subprocess.CompletedProcess:
        """``ssh user@GUEST command`` from inside the namespace with ``key``, or with ``password``
        only (``sshpass -e``: the password goes through the environment, never the command line)."""
        assert self.network is not None
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
        if password is not None:
            env["SSHPASS"] = password
            login = ["sshpass", "-e", "ssh", *SSH_OPTIONS, "-o", "PubkeyAuthentication=no",
                     "-o", "PreferredAuthentications=password,keyboard-interactive"]
        else:
            assert key is not None
            login = ["ssh", *SSH_OPTIONS, "-o", "BatchMode=yes", "-i", str(key)]
        argv = self.network.exec_argv([*login, f"{user}@{GUEST}", command])
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                  env=env)
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(argv, 255, "", f"ssh timed out after {timeout} s: {exc}")

    def wait_for_ssh(self, user: str, key: Optional[Path], timeout: float,
                     password: Optional[str] = None) -> Optional[subprocess.CompletedProcess]:
        """Retry a login (key or password) until it works; the last attempt (None if none was made)."""
        last: List[subprocess.CompletedProcess] = []

        def logged_in() -> bool:
            last.append(self.ssh(user, key, "true", timeout=20, password=password))
            return last[-1].returncode == 0

        self.wait_until(logged_in, timeout, poll=2)
        return last[-1] if last else None

    def wait_for_azprov(self, user: str, key: Optional[Path], timeout: float,
                        password: Optional[str] = None) -> bool:
        """Wait until azprov.service's main process has exited (asked over SSH: a Type=notify
        unit is "active" from READY=1 on while azprov still works, and the Ready report, the
        state and the unit's self-disable come after the login works), then until a login works
        again (azprov reloads sshd for a late host key with OpenSSH 9.8 and later, which closes
        the listener for a moment).  False if azprov was still running after ``timeout`` s."""
        def ended() -> bool:
            result = self.ssh(user, key, f"systemctl show -P MainPID {AZPROV_UNIT}", timeout=30, password=password)
            return result.returncode == 0 and result.stdout.strip() == "0"

        done = self.wait_until(ended, timeout, poll=2)
        self.wait_for_ssh(user, key, 60, password=password)
        return done

    # --- the disk, after power-off -------------------------------------------------------------

    def raw_disk(self) -> Path:
        """The VM's disk as it is now, as a raw file (made again on each call)."""
        if self.qemu is not None and self.qemu.running:
            raise VmSetupError("the VM is running: power it off before reading its disk")
        raw = self.workdir / "disk.raw"
        run(["qemu-img", "convert", "-O", "raw", str(self.overlay), str(raw)], timeout=300)
        return raw
