"""Logging: to the journal with structured fields when systemd runs us, else to stderr.

``azprov provision`` run by systemd also writes its lines (steps, warnings, errors, each HTTP
retry) to ``/dev/console``: the serial console Azure boot diagnostics shows, the one place to
look when nobody can log in.  They go there directly, not through stdout/stderr (which the unit
sends to journal+console), so the journal gets each message once, with its fields.

Every record carries the current context as journal fields: ``AZPROV_STEP`` (the provisioning
step), ``AZPROV_VM_ID``, and ``AZPROV_OUTCOME`` where a message states one, so
``journalctl -u azprov AZPROV_STEP=ssh_keys`` finds a step's story.  Secrets are never logged.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Optional

# journal MESSAGE_IDs of the events an operator searches for (journalctl MESSAGE_ID=...)
MESSAGE_READY = "6f3b0c1e5d8a4b2f9e7c1a3d5b7f9e21"
MESSAGE_FAILED = "a1c3e5f7092b4d6f8a0c2e4f6b8d0f13"

CONSOLE = "/dev/console"

_context: dict = {}
_thread = threading.local()  # a worker thread's own AZPROV_STEP (set_thread_step)
_destination = "stderr"


def set_context(*, step: Optional[str] = None, vm_id: Optional[str] = None) -> None:
    """Set the fields attached to every following record (None leaves a field unchanged)."""
    if step is not None:
        _context["AZPROV_STEP"] = step
    if vm_id is not None:
        _context["AZPROV_VM_ID"] = vm_id


def set_thread_step(step: str) -> None:
    """``AZPROV_STEP`` for the records of the calling (worker) thread, whatever the main thread's."""
    _thread.step = step


def outcome(value: str, message_id: Optional[str] = None) -> dict:
    """``extra=`` for a record that states an outcome: ``log.info(..., extra=outcome("ok"))``."""
    fields = {"AZPROV_OUTCOME": value}
    if message_id:
        fields["MESSAGE_ID"] = message_id
    return fields


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        fields = dict(_context)  # a copy: the main thread may set the context meanwhile
        step = getattr(_thread, "step", None)
        if step is not None:
            fields["AZPROV_STEP"] = step
        for key, value in fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _journal_handler() -> Optional[logging.Handler]:
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    return JournalHandler(SYSLOG_IDENTIFIER="azprov")


class ConsoleHandler(logging.Handler):
    """One line per record on the console: ``azprov: [warning: ]message``.  Best effort: a
    console that cannot be opened or written is left alone."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.setFormatter(logging.Formatter("%(message)s"))

    @classmethod
    def open(cls, path: str = CONSOLE) -> Optional["ConsoleHandler"]:
        try:
            return cls(os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC | os.O_APPEND))
        except OSError:
            return None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            text = " ".join(self.format(record).splitlines())  # one console line per record
            os.write(self.fd, f"azprov: {level}{text}\n".encode("utf-8", "replace"))
        except Exception:  # never let the console stop provisioning
            pass

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        super().close()


def destination() -> str:
    """Where logs go since :func:`setup_logging`: "journal" or "stderr"."""
    return _destination


def under_systemd() -> bool:
    """True when systemd started this process as (part of) a unit."""
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))


def setup_logging(verbosity: int = 0, *, service: Optional[bool] = None, console: bool = False) -> str:
    """Configure the root logger; returns where logs go ("journal" or "stderr").

    A service (run by systemd) logs INFO to the journal when systemd-python is present, and
    with ``console`` (``azprov provision``) to the console as well; a person at a terminal sees
    warnings, ``-v`` adds progress, ``-vv`` adds debugging detail.  Without systemd-python a
    service logs to stderr, which its unit sends to the journal and the console.
    """
    global _destination
    service = under_systemd() if service is None else service
    level = logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 or service else logging.WARNING
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _journal_handler() if service else None
    target = "journal"
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("azprov: %(levelname)s: %(message)s"))
        target = "stderr"
    handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    if target == "journal" and console:
        on_console = ConsoleHandler.open()
        if on_console is not None:
            on_console.setLevel(logging.INFO)
            root.addHandler(on_console)
    root.setLevel(level)
    _destination = target
    for noisy in ("urllib3", "requests"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return target
