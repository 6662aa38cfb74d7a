"""The fakes of the unit tests: a clock that only moves when the code sleeps, a recording command
runner, an in-memory fabric, and a Host that behaves as the running system."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from azprov.errors import FabricUnreachable
from azprov.goalstate import GoalState
from azprov.host import CommandResult, Host
from azprov.host.probes import NoProbes, comm_name
from azprov.http import Deadline
from azprov.imds import Metadata, OsProfile, PublicKey

ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDSi/X+2K9K0naVa3RLHjpeUGQvbDYDviCgQOvvubHr7 "
           "azureuser@azprov-demo")
VM_ID = "8b1e4c3d-52a7-4f6e-9c80-d3a2b7e615f4"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def fake_http(**kwargs):
    """An HttpClient on a fake clock with jitter fixed at its ceiling (rng = 1.0)."""
    from azprov.http import HttpClient

    clock = FakeClock()
    client = HttpClient(clock=clock, sleep=clock.sleep, rng=kwargs.pop("rng", lambda: 1.0), **kwargs)
    return client, clock


def metadata(*, vm_id: str = VM_ID, computer_name: str = "vm1", admin_username: str = "azureuser",
             keys: Sequence = (ED25519,), disable_password_authentication: bool = True,
             pps_type: Optional[str] = None, os_profile: bool = True) -> Metadata:
    """IMDS metadata as ``ImdsClient.metadata()`` returns it; keys are lines or PublicKeys."""
    profile = OsProfile(computer_name, admin_username, disable_password_authentication) if os_profile else None
    public_keys = tuple(k if isinstance(k, PublicKey) else PublicKey(k, f"/home/{admin_username}/.ssh/authorized_keys")
                        for k in keys)
    return Metadata(vm_id, "vm-resource", profile, public_keys, pps_type)


class FakeRunner:
    """Records every argv; answers with ``handler(argv)`` (a CommandResult or None for success)."""

    def __init__(self, handler: Optional[Callable[[List[str]], Optional[CommandResult]]] = None) -> None:
        self.calls: List[List[str]] = []
        self.handler = handler

    def __call__(self, argv, timeout, input) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        result = self.handler(argv) if self.handler else None
        return result or CommandResult(tuple(argv), 0, "", "")

    def commands(self) -> List[str]:
        return [argv[0].rsplit("/", 1)[-1] for argv in self.calls]


class FakeWireServer:
    def __init__(self, fabric: "FakeFabric") -> None:
        self.fabric = fabric

    def goal_state(self, deadline=None) -> GoalState:
        self.fabric.calls.append("goal_state")
        if self.fabric.wireserver_down:
            raise FabricUnreachable("WireServer did not answer")
        return self.fabric.goal

    def report(self, status, deadline=None, *, goal_state=None) -> GoalState:
        self.fabric.calls.append(f"report:{status.state}")
        if self.fabric.wireserver_down or (status.ready and self.fabric.ready_fails):
            raise FabricUnreachable("WireServer did not answer")
        self.fabric.reports.append(status)
        return self.fabric.goal


class FakeImds:
    def __init__(self, fabric: "FakeFabric") -> None:
        self.fabric = fabric

    def deadline(self) -> Deadline:
        return Deadline.after(300.0)

    def metadata(self, deadline: Optional[Deadline] = None) -> Metadata:
        self.fabric.calls.append("metadata")
        if self.fabric.imds_error is not None:
            raise self.fabric.imds_error
        return self.fabric.metadata


class FakeFabric:
    """What ``clients.connect`` returns, in memory: records calls and accepted reports."""

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata
        self.goal = GoalState(5, "container-1", "instance-1._vm")
        self.calls: List[str] = []
        self.reports: list = []
        self.wireserver_down = False
        self.ready_fails = False
        self.imds_error: Optional[Exception] = None
        self.wireserver = FakeWireServer(self)
        self.imds = FakeImds(self)
        self.connected = 0

    def connect(self) -> "FakeFabric":
        self.connected += 1
        return self

    def prepare(self) -> None:
        """Nothing to import or open in memory (``clients.Fabric.prepare``)."""

class FakeProbes(NoProbes):
    """A running system as a test describes it: which processes run, the kernel's host name..."""

    def __init__(self, *, live: bool = True, systemd: bool = True, networkd: bool = False,
                 processes: Optional[Dict[str, list]] = None, kernel_hostname: Optional[str] = None,
                 cmdline: Sequence[str] = (), interface: Optional[str] = "eth0",
                 mountinfo: Sequence[str] = (), selinux: bool = False) -> None:
        self.live = live
        self._systemd = systemd
        self._networkd = networkd
        # keyed by /proc/PID/comm as the kernel has it: at most 15 characters
        self._processes = processes or {}
        too_long = [comm for comm in self._processes if comm != comm_name(comm)]
        if too_long:
            raise ValueError(f"no process has the comm {too_long}: the kernel keeps 15 characters")
        self._hostname = kernel_hostname
        self._cmdline = list(cmdline)
        self._interface = interface
        self._mountinfo = list(mountinfo)
        self._selinux = selinux

    def kernel_hostname(self) -> Optional[str]:
        return self._hostname

    def kernel_command_line(self) -> List[str]:
        return list(self._cmdline)

    def systemd_running(self) -> bool:
        return self._systemd

    def networkd_running(self) -> bool:
        return self._networkd

    def processes(self, name: str) -> list:
        return list(self._processes.get(comm_name(name), []))

    def default_interface(self) -> Optional[str]:
        return self._interface

    def mountinfo(self) -> List[str]:
        return list(self._mountinfo)

    def selinux_enabled(self) -> bool:
        return self._selinux


def live_host(root: str, runner: "FakeRunner", **probes) -> Host:
    """A Host that behaves as the running system (systemd as PID 1 unless ``systemd=False``),
    while its files stay under ``root`` and every command goes to ``runner``: for checking
    live-host commands.  ``probes`` are :class:`FakeProbes` arguments.  Setting the kernel's host
    name is recorded in ``runner.calls`` as ``["sethostname", NAME]`` instead of being done."""

    class LiveHost(Host):
        def set_kernel_hostname(self, name: str) -> bool:
            runner.calls.append(["sethostname", name])
            return True

    return LiveHost(root, runner=runner, probes=FakeProbes(**probes))
