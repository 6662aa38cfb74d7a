"""Commands: argv lists only (never a shell), a clean environment, timeouts, output logged on
failure.  The runner is injectable so tests can answer for tools an image tree lacks."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

from azprov.errors import CommandFailed

log = logging.getLogger(__name__)

COMMAND_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class CommandResult:
    """How a command ended: exit status and its output."""

    argv: Tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], float, Optional[str]], CommandResult]


def run_subprocess(argv: Sequence[str], timeout: float, input: Optional[str]) -> CommandResult:
    """The real runner: no shell, clean environment, output captured."""
    import subprocess  # on first use: a command like report-ready runs none (issue 23)

    env = {"PATH": COMMAND_PATH, "LC_ALL": "C", "LANG": "C"}
    completed = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, errors="replace",
        timeout=timeout, env=env, stdin=None if input is not None else subprocess.DEVNULL,
        close_fds=True,
    )
    return CommandResult(tuple(argv), completed.returncode, completed.stdout, completed.stderr)


def run(runner: Runner, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
        input: Optional[str] = None) -> CommandResult:
    """Run ``argv`` with ``runner``; raise CommandFailed unless it succeeds or not ``check``."""
    import subprocess

    argv = [str(arg) for arg in argv]
    log.debug("running %s", " ".join(argv))
    try:
        result = runner(argv, timeout, input)
    except FileNotFoundError:
        raise CommandFailed(f"{argv[0]} is not installed", command=os.path.basename(argv[0])) from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{os.path.basename(argv[0])} did not finish within {timeout:g} s",
                            command=os.path.basename(argv[0])) from None
    if result.returncode != 0 and check:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        log.warning("%s failed with status %d: %s", " ".join(argv), result.returncode,
                    output or "(no output)")
        last = output.splitlines()[-1] if output else ""
        raise CommandFailed(
            f"{os.path.basename(argv[0])} failed with status {result.returncode}"
            + (f": {last[:200]}" if last else ""),
            command=os.path.basename(argv[0]), status=result.returncode,
        )
    return result
