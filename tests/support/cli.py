"""Running the real ``azprov`` CLI as a subprocess, and markers shared by the emulator tests."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

import pytest

requires_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: useradd --root chroots and keys are chowned to the user"
)
SERVICE_VARIABLES = ("NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def environment() -> dict:
    """This environment minus systemd's service variables (the CLI must log to stderr), with this
    checkout first on the module path."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def command(*args: str) -> list:
    return [sys.executable, "-m", "azprov", *args]


def fabric_args(fabric) -> list:
    return ["--wireserver", fabric.wireserver_url, "--imds", fabric.imds_url, "--timeout", "20"]


def azprov(*args: str, timeout: float = 120, input: Optional[str] = None) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout,
                          env=environment(), input=input, stdin=None if input is not None else subprocess.DEVNULL)


def provision(root: str, fabric, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return azprov("provision", "-v", "--root", root, *fabric_args(fabric), *extra, timeout=timeout)


def start_provision(root: str, fabric, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(command("provision", "-v", "--root", root, *fabric_args(fabric), *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment(), stdin=subprocess.DEVNULL)


def provision_until(root: str, fabric, marker: str, timeout: float = 60) -> str:
    """Start ``azprov provision -v``, read its log line by line, and SIGKILL its whole process
    group (azprov and any command it runs, like a power cut) as soon as a line contains
    ``marker``.  Returns the log read so far."""
    import signal
    import threading

    process = subprocess.Popen(command("provision", "-v", "--root", root, *fabric_args(fabric)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=environment(), stdin=subprocess.DEVNULL, start_new_session=True)

    def kill() -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if marker in line:
                kill()
                break
    finally:
        watchdog.cancel()
        process.wait()
        process.stderr.close()
    log = "".join(seen)
    if marker not in log:
        raise AssertionError(f"{marker!r} never appeared; exit {process.returncode}; log:\n{log}")
    return log


def temp_files(root: str) -> list:
    """Files left half-written: azprov's temp files, shadow's ``/etc/<db>.lock`` files and
    ssh-keygen's ``ssh_host_*_key.XXXXXXXXXX`` temp keys (``/etc/.pwd.lock`` is permanent)."""
    import re

    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.relpath(os.path.join(directory, name), root)
            if (name.endswith(".azprov.tmp")
                    or re.fullmatch(r"etc/(passwd|shadow|group|gshadow|subuid|subgid)\.lock", path)
                    or re.fullmatch(r"ssh_host_\w+_key\.\w{10}", name)):
                found.append(path)
    return sorted(found)
