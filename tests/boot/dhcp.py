"""A real DHCP server for the boot tests: dnsmasq on one end of a veth pair, the booted image on the other.

:class:`DhcpNetwork` makes two network namespaces (unique names per run): the *fabric* side,
whose loopback holds 168.63.129.16/32 and 169.254.169.254/32 (the emulator listens there, as in
:mod:`tests.boot.fabric`) and whose end of the veth pair is the gateway (192.0.2.1/24, TEST-NET-1:
no real network's address); and the *VM* side, holding only loopback and ``eth0``, the other end,
which the image's own DHCP client configures (``systemd-nspawn --network-namespace-path`` of that
namespace, with CAP_NET_ADMIN).  Nothing is created in the host's namespace and no packet leaves
the pair.  Both namespaces are deleted on exit.

:class:`DhcpServer` runs ``dnsmasq`` (Debian's ``dnsmasq-base``) in the fabric namespace, DHCP only
(``--port=0``), handing out a lease with the gateway as router and option 245 (the WireServer, as
Azure's DHCP does), with ``--log-dhcp``: for each packet with a host name option it logs
``XID client provides name: NAME`` before the ``XID DHCPREQUEST(...)`` line.  Its log goes to a
pipe read by a thread that stamps each line with ``time.monotonic()``, the clock the booted
container shares with the host (systemd's ``...TimestampMonotonic``), so each packet can be placed
before or after a unit of the boot started.  :func:`packets` turns the log into
:class:`DhcpPacket` records: which message, which transaction, which host name it carried.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from tests.boot.fabric import IMDS, WIRESERVER
from tests.boot.image import CLEAN_ENV, HarnessError, run

GATEWAY = "192.0.2.1"
PREFIX = 24
POOL = ("192.0.2.50", "192.0.2.99")
SERVER_IF = "veth-fabric"
VM_IF = "eth0"
OPTION_245 = ":".join(f"{int(octet):02x}" for octet in WIRESERVER.split("."))  # a8:3f:81:10

_XID = re.compile(r"dnsmasq-dhcp\[\d+\]: (\d+) ")
_PACKET = re.compile(r"\b(\d+) (DHCPDISCOVER|DHCPREQUEST|DHCPRELEASE|DHCPINFORM|DHCPDECLINE)\(")
_NAME = re.compile(r"\b(\d+) client provides name: (\S+)")


@dataclass(frozen=True)
class DhcpPacket:
    """One message a client sent, as the server logged it."""

    monotonic: float  # seconds, CLOCK_MONOTONIC, when the server logged its first line
    kind: str  # DHCPDISCOVER, DHCPREQUEST, ...
    xid: str
    name: Optional[str]  # the host name option it carried, or None
    line: str


def packets(lines: List[Tuple[float, str]]) -> List[DhcpPacket]:
    """The client messages in dnsmasq's ``--log-dhcp`` lines, oldest first."""
    found: List[DhcpPacket] = []
    names = {}
    received = {}  # xid -> when the first line about its current message was logged
    for stamp, line in lines:
        xid = _XID.search(line)
        if xid:
            received.setdefault(xid.group(1), stamp)
        named = _NAME.search(line)
        if named:
            names[named.group(1)] = named.group(2)
            continue
        packet = _PACKET.search(line)
        if packet:
            xid = packet.group(1)
            found.append(DhcpPacket(received.pop(xid, stamp), packet.group(2), xid,
                                    names.pop(xid, None), line.strip()))
    return found


class DhcpNetwork:
    """``with DhcpNetwork() as net:`` ``net.fabric`` (a namespace name with ``.name``, for
    :class:`tests.boot.fabric.Emulator`) and ``net.vm`` (the namespace to boot the image in)."""

    class _Named:
        def __init__(self, name: str) -> None:
            self.name = name

    def __init__(self) -> None:
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.fabric = self._Named(f"azprov-dhcpf-{tag}")
        self.vm = self._Named(f"azprov-dhcpv-{tag}")
        self.created: List[str] = []

    def __enter__(self) -> "DhcpNetwork":
        try:
            for ns in (self.fabric.name, self.vm.name):
                run(["ip", "netns", "add", ns])
                self.created.append(ns)
                run(["ip", "-n", ns, "link", "set", "lo", "up"])
            for address in (WIRESERVER, IMDS):
                run(["ip", "-n", self.fabric.name, "addr", "add", f"{address}/32", "dev", "lo"])
            run(["ip", "-n", self.fabric.name, "link", "add", SERVER_IF, "type", "veth",
                 "peer", "name", VM_IF, "netns", self.vm.name])
            run(["ip", "-n", self.fabric.name, "addr", "add", f"{GATEWAY}/{PREFIX}", "dev", SERVER_IF])
            run(["ip", "-n", self.fabric.name, "link", "set", SERVER_IF, "up"])
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.delete()

    def nspawn_args(self) -> List[str]:
        """What the image needs to run its own DHCP client on ``eth0``."""
        return ["--capability=CAP_NET_ADMIN"]

    def delete(self) -> None:
        problems = []
        for ns in reversed(self.created):
            deadline = time.monotonic() + 5
            while True:
                left = run(["ip", "netns", "pids", ns], check=False).stdout.split()
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            result = run(["ip", "netns", "del", ns], check=False)
            if result.returncode != 0:
                problems.append(f"ip netns del {ns}: {result.stderr.strip()}")
            elif left:
                problems.append(f"network namespace {ns} still had processes {left} when deleted")
        self.created = []
        if problems:
            raise HarnessError("; ".join(problems))


class DhcpServer:
    """dnsmasq in ``network``'s fabric namespace; ``lines`` are its log lines, time-stamped."""

    def __init__(self, network: DhcpNetwork, workdir: Path, label: str) -> None:
        self.network = network
        self.log_path = workdir / f"{label}.dnsmasq.log"
        self.leases = workdir / f"{label}.dnsmasq.leases"
        self.lines: List[Tuple[float, str]] = []
        self.process: Optional[subprocess.Popen] = None
        self._reader: Optional[threading.Thread] = None

    def __enter__(self) -> "DhcpServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self, timeout: float = 10) -> None:
        self.leases.write_text("")
        argv = ["ip", "netns", "exec", self.network.fabric.name, "dnsmasq", "--keep-in-foreground",
                "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0", "--user=root",
                f"--interface={SERVER_IF}", "--bind-interfaces", "--pid-file=",
                f"--dhcp-range={POOL[0]},{POOL[1]},255.255.255.0,1h",
                f"--dhcp-option=option:router,{GATEWAY}", f"--dhcp-option-force=245,{OPTION_245}",
                "--dhcp-authoritative", "--no-ping", f"--dhcp-leasefile={self.leases}",
                "--log-dhcp", "--log-facility=-"]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env=CLEAN_ENV, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._reader.join(2)
                raise HarnessError(f"dnsmasq exited {self.process.returncode}: {self.text()[-2000:]}")
            if "DHCP, IP range" in self.text():
                return
            time.sleep(0.1)
        self.stop()
        raise HarnessError(f"dnsmasq did not start within {timeout} s: {self.text()[-2000:]}")

    def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        with open(self.log_path, "w") as copy:
            for line in self.process.stderr:
                stamp = time.monotonic()
                self.lines.append((stamp, line.rstrip("\n")))
                copy.write(f"{stamp:.6f} {line}")
                copy.flush()

    def text(self) -> str:
        return "\n".join(line for _stamp, line in self.lines)

    def packets(self) -> List[DhcpPacket]:
        return packets(list(self.lines))

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(5)
