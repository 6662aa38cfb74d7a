"""The fabric for the boot tests: a private network namespace and the emulator inside it.

:class:`NetNs` makes a network namespace (a unique name per run) whose loopback holds
168.63.129.16/32 and 169.254.169.254/32, so the image's agent talks to the real default
addresses with no override and no packet leaves the namespace; it is deleted on exit.  Those
addresses are never used in the host's namespace.

:class:`Emulator` runs ``azprov fabric serve`` (the repository's code, with the venv's Python
when there is one, else Debian's) inside that namespace on port 80 of both addresses with a
scenario, and reads back its JSON request log.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import List, Optional

from tests.boot.image import CLEAN_ENV, REPO, HarnessError, run

WIRESERVER = "168.63.129.16"
IMDS = "169.254.169.254"


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else "/usr/bin/python3"


class NetNs:
    """``with NetNs() as ns:`` a private network namespace named ``ns.name``."""

    def __init__(self, prefix: str = "azprov-boot") -> None:
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self.created = False

    def __enter__(self) -> "NetNs":
        run(["ip", "netns", "add", self.name])
        self.created = True
        try:
            run(["ip", "-n", self.name, "link", "set", "lo", "up"])
            for address in (WIRESERVER, IMDS):
                run(["ip", "-n", self.name, "addr", "add", f"{address}/32", "dev", "lo"])
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.delete()

    def pids(self) -> List[int]:
        result = run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in result.stdout.split()]

    def delete(self) -> None:
        """Delete the namespace; the harness has stopped what it started in it before this."""
        if not self.created:
            return
        deadline = time.monotonic() + 5
        left = self.pids()
        while left and time.monotonic() < deadline:  # processes killed a moment ago may linger
            time.sleep(0.2)
            left = self.pids()
        run(["ip", "netns", "del", self.name])
        self.created = False
        if left:  # never expected; they stay isolated in the (now unnamed) namespace
            raise HarnessError(f"network namespace {self.name} still had processes {left} when deleted")


class Emulator:
    """``azprov fabric serve`` inside ``netns`` with ``scenario`` (a dict), logging to ``log``."""

    def __init__(self, netns: NetNs, scenario: dict, workdir: Path, label: str) -> None:
        self.netns = netns
        self.scenario = scenario
        self.scenario_path = workdir / f"{label}.scenario.json"
        self.log_path = workdir / f"{label}.fabric.jsonl"
        self.stderr_path = workdir / f"{label}.fabric.stderr"
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "Emulator":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self, timeout: float = 20) -> None:
        self.scenario_path.write_text(json.dumps(self.scenario, indent=2) + "\n")
        if self.log_path.exists():
            self.log_path.unlink()
        argv = ["ip", "netns", "exec", self.netns.name, python(), "-m", "azprov", "fabric", "serve",
                "--wireserver", f"{WIRESERVER}:80", "--imds", f"{IMDS}:80",
                "--scenario", str(self.scenario_path), "--log", str(self.log_path)]
        env = dict(CLEAN_ENV, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(f"the fabric emulator exited {self.process.returncode}: "
                                   f"{self.stderr_path.read_text()[-3000:]}")
            if "azprov fabric: WireServer on" in self.stderr_path.read_text() and self._listening():
                return
            time.sleep(0.1)
        self.stop()
        raise HarnessError(f"the fabric emulator did not listen within {timeout} s: "
                           f"{self.stderr_path.read_text()[-3000:]}")

    def _listening(self) -> bool:
        out = run(["ip", "netns", "exec", self.netns.name, "ss", "-Hltn"], check=False).stdout
        return f"{WIRESERVER}:80" in out and f"{IMDS}:80" in out

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)

    def records(self) -> List[dict]:
        """Every request the emulator saw, oldest first."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def reports(self) -> List[dict]:
        """The health reports it accepted or refused (records with a parsed report)."""
        return [r for r in self.records() if r.get("endpoint") == "health" and "report" in r]


def boot_with_fabric(tree: Path, scenario: dict, workdir: Path, label: str, nspawn_args=(),
                     timeout: Optional[float] = None):
    """Boot ``tree`` once (:func:`tests.boot.nspawn.boot`) in a fresh namespace with the emulator
    serving ``scenario``; returns the boot and every request the emulator saw during it.
    ``nspawn_args``: more systemd-nspawn options for this boot; ``timeout``: its hard limit
    (default ``AZPROV_BOOT_TIMEOUT``)."""
    from tests.boot import nspawn

    limit = {} if timeout is None else {"timeout": timeout}
    with NetNs() as ns:
        with Emulator(ns, scenario, workdir, label) as fabric:
            booted = nspawn.boot(tree, ns.name, workdir=workdir, label=label, extra_args=nspawn_args,
                                 **limit)
            fabric.stop()  # every request is in the log once it has stopped
            return booted, fabric.records()
