"""What the running system says about itself: ``/proc``, the kernel host name and command line,
whether systemd, systemd-networkd or a process runs, SELinux, the default interface, what is
mounted.

These are facts of the machine azprov runs on, not of a root directory, so they exist only when
the root is ``/``.  :class:`LiveProbes` reads them; :data:`NOT_LIVE` (a :class:`NoProbes`) is the
null object of an image tree (``--root``): nothing runs there, so every probe says so without
looking.  ``Host`` gets one of them (``host.probes``); tests inject fakes.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

from azprov.errors import StepFailed
from azprov.host.walk import read_bounded

Processes = List[Tuple[int, List[str]]]  # (pid, argv)


def default_route_interface(route_table: str) -> Optional[str]:
    """The interface of the IPv4 default route in ``/proc/net/route`` text, or None."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            return fields[0]
    return None


COMM_LENGTH = 15  # TASK_COMM_LEN (16) less the terminating NUL


def comm_name(name: str) -> str:
    """What ``/proc/PID/comm`` says for a program called ``name``: its first 15 characters."""
    return name[:COMM_LENGTH]


def _read(path: str, limit: int = 64 * 1024) -> Optional[str]:
    """A file of the running kernel (``/proc``) as text; None if it cannot be read."""
    try:
        data = read_bounded(path, limit)
    except (OSError, StepFailed):
        return None
    return None if data is None else data.decode("utf-8", errors="replace")


class NoProbes:
    """An image tree: nothing runs, no kernel to ask."""

    live = False

    def kernel_hostname(self) -> Optional[str]:
        return None

    def kernel_command_line(self) -> List[str]:
        return []

    def systemd_running(self) -> bool:
        return False

    def networkd_running(self) -> bool:
        return False

    def selinux_enabled(self) -> bool:
        return False

    def processes(self, name: str) -> Processes:
        return []

    def default_interface(self) -> Optional[str]:
        return None

    def mountinfo(self) -> List[str]:
        """The lines of ``/proc/self/mountinfo``."""
        return []


NOT_LIVE = NoProbes()


class LiveProbes(NoProbes):
    """The running system, read from ``/proc``, ``/run`` and ``/sys``."""

    live = True

    def kernel_hostname(self) -> Optional[str]:
        text = _read("/proc/sys/kernel/hostname")
        return text.strip() if text is not None else None

    def kernel_command_line(self) -> List[str]:
        return (_read("/proc/cmdline") or "").split()

    def systemd_running(self) -> bool:
        return os.path.isdir("/run/systemd/system")

    def networkd_running(self) -> bool:
        return bool(self.processes("systemd-networkd")) and os.path.isdir("/run/systemd/netif")

    def selinux_enabled(self) -> bool:
        return os.path.exists("/sys/fs/selinux/enforce")

    def processes(self, name: str) -> Processes:
        """``(pid, argv)`` of the processes whose command name (``comm``) is ``name``.

        The kernel keeps only the first 15 characters of a command name (``TASK_COMM_LEN``):
        ``systemd-networkd`` runs as ``systemd-network``.  ``name`` is cut the same way."""
        comm = comm_name(name)
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/comm") as handle:
                    if handle.read().rstrip("\n") != comm:
                        continue
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    argv = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
            except OSError:
                continue
            found.append((int(entry), argv))
        return found

    def default_interface(self) -> Optional[str]:
        text = _read("/proc/net/route", 1024 * 1024)
        return default_route_interface(text) if text is not None else None

    def mountinfo(self) -> List[str]:
        return (_read("/proc/self/mountinfo", 1024 * 1024) or "").splitlines()
