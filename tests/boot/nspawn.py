"""systemd-nspawn for the boot tests: boot a tree under a hard timeout, run a command in a tree,
read the tree's journal.

A boot runs ``systemd-nspawn -b`` with systemd as PID 1 inside the network namespace the
harness made (``--network-namespace-path``), the console on stdout (kept in a file), and stops
when the test-only recorder unit powers the container off.  If it has not stopped after
``timeout`` seconds, nspawn and the container's processes are killed (by process id) and
:class:`BootTimeout` carries the console output.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tests.boot.image import CLEAN_ENV, RECORDER_DIR, HarnessError

BOOT_TIMEOUT = float(os.environ.get("AZPROV_BOOT_TIMEOUT", "120"))
COMMON = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--link-journal=no",
          "--resolv-conf=off", "--timezone=off"]


class BootTimeout(AssertionError):
    """The container did not power off in time (the console output is in the message)."""


@dataclass
class Boot:
    """What one boot left behind, read from outside the container."""

    tree: Path
    console: str
    exit_code: int
    seconds: float
    record: dict
    journal: List[dict] = field(default_factory=list)  # this boot's entries only

    @property
    def boot_id(self) -> str:
        return self.record["boot_id"]

    def unit(self, name: str) -> Dict[str, str]:
        return self.record["units"][name]

    def entries(self, **match: str) -> List[dict]:
        """Journal entries of this boot whose fields equal ``match``."""
        return [e for e in self.journal if all(e.get(k) == v for k, v in match.items())]

    def explain(self) -> str:
        """Console and azprov's journal, for assertion messages."""
        azprov = "\n".join(str(e.get("MESSAGE")) for e in self.journal
                           if e.get("_SYSTEMD_UNIT") == "azprov.service" or e.get("UNIT") == "azprov.service")
        return f"--- console (last 6000 chars) ---\n{self.console[-6000:]}\n--- azprov's journal ---\n{azprov[-6000:]}"


def _prepare() -> None:
    os.makedirs("/run/systemd/nspawn", exist_ok=True)


def run_in(tree: Path, argv: Sequence[str], *, setenv: Optional[Dict[str, str]] = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``argv`` in ``tree`` without booting it (no network at all: ``--private-network``)."""
    _prepare()
    options = [f"--setenv={k}={v}" for k, v in (setenv or {}).items()]
    return subprocess.run(
        [*COMMON, "--private-network", f"--machine=azprov-run-{secrets.token_hex(4)}", "-D", str(tree),
         *options, "--", *argv],
        capture_output=True, text=True, timeout=timeout, env=CLEAN_ENV, stdin=subprocess.DEVNULL,
    )


def _descendants(pid: int) -> List[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found.extend(children)
            queue.extend(children)
    return found


def _signal(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _kill(process: subprocess.Popen, grace: float = 10) -> None:
    """Stop a boot that overran: SIGTERM to nspawn first (it powers the container off, which
    also flushes the journal), then SIGKILL to the container's processes (by id, so that nspawn
    reaps its child) and to nspawn itself."""
    if process.poll() is not None:
        return
    _signal([process.pid], signal.SIGTERM)
    try:
        process.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    _signal(_descendants(process.pid), signal.SIGKILL)
    try:
        process.wait(timeout=5)
        return
    except subprocess.TimeoutExpired:
        pass
    _signal([process.pid, *_descendants(process.pid)], signal.SIGKILL)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def boot(tree: Path, netns: str, *, timeout: float = BOOT_TIMEOUT, workdir: Optional[Path] = None,
         label: str = "boot", extra_args: Sequence[str] = ()) -> Boot:
    """Boot ``tree`` with systemd as PID 1 inside network namespace ``netns`` until the recorder
    powers it off; returns the record, the console and this boot's journal entries.
    ``extra_args``: more systemd-nspawn options (``--bind-ro=/dev/loop3:/dev/sr0``...)."""
    _prepare()
    record_path = tree / RECORDER_DIR / "record.json"
    if record_path.exists():
        record_path.unlink()
    workdir = workdir or tree.parent
    console_path = workdir / f"{label}.console.log"
    argv = [*COMMON, "--console=read-only", f"--network-namespace-path=/run/netns/{netns}",
            f"--machine=azprov-{secrets.token_hex(4)}", "-D", str(tree), *extra_args, "-b"]
    started = time.monotonic()
    with open(console_path, "w") as console:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                   stderr=subprocess.STDOUT, env=CLEAN_ENV)
        try:
            exit_code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(process)
            text = console_path.read_text(errors="replace")
            raise BootTimeout(f"{label}: the container did not power off within {timeout:.0f} s "
                              f"(stopped); console:\n{text[-6000:]}\n{_journal_tail(tree)}") from None
        except BaseException:
            _kill(process)
            raise
    seconds = time.monotonic() - started
    text = console_path.read_text(errors="replace")
    if not record_path.exists():
        raise AssertionError(f"{label}: systemd-nspawn exited {exit_code} after {seconds:.1f} s and the "
                             f"recorder unit wrote nothing; console:\n{text[-8000:]}")
    record = json.loads(record_path.read_text())
    result = Boot(tree=tree, console=text, exit_code=exit_code, seconds=seconds, record=record)
    result.journal = journal(tree, boot_id=record["boot_id"])
    return result


def _journal_tail(tree: Path, lines: int = 60) -> str:
    """The last messages of the image's journal (all boots), for a timeout's message."""
    try:
        entries = journal(tree)
    except (HarnessError, OSError, subprocess.SubprocessError, ValueError) as exc:
        return f"--- journal unreadable: {exc} ---"
    text = [f"{e.get('SYSLOG_IDENTIFIER', e.get('_COMM', '?'))}: {e.get('MESSAGE')}" for e in entries[-lines:]]
    return "--- journal (last %d entries) ---\n%s" % (len(text), "\n".join(text))


def journal(tree: Path, boot_id: Optional[str] = None) -> List[dict]:
    """The image's persistent journal as JSON entries (only boot ``boot_id``'s if given)."""
    directory = tree / "var/log/journal"
    argv = ["journalctl", "--no-pager", "-o", "json", "-D", str(directory)]
    if boot_id:
        argv.append(f"_BOOT_ID={boot_id.replace('-', '')}")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=CLEAN_ENV)
    if result.returncode != 0:
        raise HarnessError(f"journalctl -D {directory} failed: {result.stderr[-2000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
