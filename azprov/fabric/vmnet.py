"""The network of an emulated Azure VM: a private namespace, a tap, and a DHCP server in it.

:class:`VmNetwork` makes a network namespace of its own (a unique name), a tap device in it for
QEMU, and puts on that tap a gateway address, 168.63.129.16/32 and 169.254.169.254/32, so the
guest reaches the fabric emulator (started inside the namespace by :mod:`azprov.fabric.vm`) at
Azure's real addresses.  ``dnsmasq`` (DHCP only, ``--port=0``) serves the guest one address, a
default route and classless static routes (option 121) to both fabric addresses through the
gateway, and option 245 (the WireServer address, as Azure's DHCP servers send it).  Its log
(``--log-dhcp``) records the host name each DHCP request carried: :meth:`VmNetwork.dhcp_names`.

Nothing here has an uplink: no packet of the guest leaves the namespace, and the fabric
addresses never appear in the caller's own namespace.  :meth:`VmNetwork.close` stops dnsmasq
and deletes the namespace (the tap goes with it).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

WIRESERVER = "168.63.129.16"
IMDS = "169.254.169.254"
GATEWAY = "10.213.0.1"
GUEST = "10.213.0.10"
PREFIX = 24
TAP = "azvm0"
# Option 245: the WireServer address as four bytes, as Azure's DHCP servers send it.
OPTION_245 = ":".join(f"{int(octet):02x}" for octet in WIRESERVER.split("."))
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_NAME_LINE = re.compile(r"client provides name: (\S+)")


class VmSetupError(RuntimeError):
    """The harness could not set the VM's surroundings up (not a finding about the image)."""


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, env={"PATH": CLEAN_PATH, "LC_ALL": "C.UTF-8"})
    if check and result.returncode != 0:
        raise VmSetupError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result


def stop_process(process: Optional[subprocess.Popen], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s, a process this module started."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class Opened:
    """Something with ``open()`` and ``close()``: ``with thing as t`` opens it, and closes it
    also when opening fails half-way (``close()`` must cope with a half-open state)."""

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclass(frozen=True)
class DhcpRequest:
    """One line of dnsmasq's log that names the host name a DHCP request carried."""

    name: str
    line: str


class VmNetwork(Opened):
    """``with VmNetwork(workdir) as net:`` the namespace ``net.name`` with the tap ``net.tap``."""

    def __init__(self, workdir: Path, prefix: str = "azprov-vm") -> None:
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self.tap = TAP
        self.workdir = Path(workdir)
        self.dhcp_log = self.workdir / "dnsmasq.log"
        self.leases = self.workdir / "dnsmasq.leases"
        self._dnsmasq: Optional[subprocess.Popen] = None
        self._created = False

    def ip(self, *argv: str) -> subprocess.CompletedProcess:
        return run(["ip", "-n", self.name, *argv])

    def exec_argv(self, argv: Sequence[str]) -> List[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def open(self) -> None:
        run(["ip", "netns", "add", self.name])
        self._created = True
        self.ip("link", "set", "lo", "up")
        self.ip("tuntap", "add", "dev", self.tap, "mode", "tap")
        for address in (f"{GATEWAY}/{PREFIX}", f"{WIRESERVER}/32", f"{IMDS}/32"):
            self.ip("addr", "add", address, "dev", self.tap)
        self.ip("link", "set", self.tap, "up")
        self._start_dnsmasq()

    def _start_dnsmasq(self) -> None:
        routes = ",".join(f"{dest},{GATEWAY}" for dest in (f"{WIRESERVER}/32", f"{IMDS}/32", "0.0.0.0/0"))
        argv = self.exec_argv([
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            f"--interface={self.tap}", "--bind-interfaces", "--user=root", "--group=root",
            f"--dhcp-range={GUEST},{GUEST},255.255.255.0,1h", f"--dhcp-option=3,{GATEWAY}",
            f"--dhcp-option=121,{routes}", f"--dhcp-option-force=245,{OPTION_245}",
            "--log-dhcp", "--log-facility=-", f"--dhcp-leasefile={self.leases}",
            f"--pid-file={self.workdir / 'dnsmasq.pid'}",
        ])
        with open(self.dhcp_log, "w") as log:
            self._dnsmasq = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             env={"PATH": CLEAN_PATH})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._dnsmasq.poll() is not None:
                raise VmSetupError(f"dnsmasq exited {self._dnsmasq.returncode}: {self.dhcp_log.read_text()[-2000:]}")
            if "DHCP, IP range" in self.dhcp_log.read_text():
                return
            time.sleep(0.1)
        raise VmSetupError(f"dnsmasq did not start: {self.dhcp_log.read_text()[-2000:]}")

    def dhcp_names(self) -> List[DhcpRequest]:
        """Every ``client provides name:`` line of dnsmasq's log so far, oldest first."""
        if not self.dhcp_log.exists():
            return []
        found = []
        for line in self.dhcp_log.read_text(errors="replace").splitlines():
            match = _NAME_LINE.search(line)
            if match:
                found.append(DhcpRequest(match.group(1), line))
        return found

    def close(self) -> None:
        stop_process(self._dnsmasq)
        self._dnsmasq = None
        if not self._created:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # processes stopped a moment ago may linger
            if not run(["ip", "netns", "pids", self.name], check=False).stdout.split():
                break
            time.sleep(0.2)
        run(["ip", "netns", "del", self.name], check=False)
        self._created = False
