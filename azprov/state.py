"""What azprov provisioned, for which VM: ``/var/lib/azprov/state.json``, and the run lock.

The state is written (atomically, directory 0700, file 0600) only after the fabric accepted
Ready, so a run whose report failed is retried on the next boot.  A VM whose id matches the state
is already provisioned; an image captured from it and booted as a new VM has another id and is
provisioned again.  ``/run/azprov/lock`` (``flock``) keeps two runs from provisioning at once.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Optional, Tuple

from azprov import __version__
from azprov.errors import Busy, StepFailed
from azprov.host import Dir, Host

log = logging.getLogger(__name__)

STATE_DIR = "/var/lib/azprov"
STATE_FILE = STATE_DIR + "/state.json"
LOCK_DIR = "/run/azprov"
LOCK_FILE = LOCK_DIR + "/lock"
LOCK_WAIT = 30.0  # seconds a second instance waits for the first
STATE_LIMIT = 256 * 1024


@dataclass(frozen=True)
class State:
    """The provisioned state recorded after Ready was accepted."""

    vm_id: str
    incarnation: int
    container_id: str
    instance_id: str
    ready_at: str  # ISO 8601, UTC
    steps: Tuple[str, ...] = ()
    version: str = __version__
    hostname: Optional[str] = None
    admin_username: Optional[str] = None
    vm_id_source: str = "imds"  # "dmi" or "imds": where this run read the VM id
    # What the platform asked for that nobody here does (azprov.extensions), said after Ready
    platform_warnings: Tuple[str, ...] = ()

    def to_json(self) -> bytes:
        data = asdict(self)
        data["steps"] = list(self.steps)
        data["platform_warnings"] = list(self.platform_warnings)
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, text: bytes) -> "State":
        data = json.loads(text.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        missing = {"vm_id", "incarnation", "container_id", "instance_id", "ready_at"} - set(known)
        if missing:
            raise ValueError(f"missing {', '.join(sorted(missing))}")
        if not isinstance(known["vm_id"], str) or not isinstance(known["incarnation"], int):
            raise ValueError("vm_id or incarnation has the wrong type")
        known["steps"] = tuple(str(step) for step in known.get("steps") or ())
        known["platform_warnings"] = tuple(str(text) for text in known.get("platform_warnings") or ())
        return cls(**known)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def load(host: Host) -> Optional[State]:
    """The recorded state, or None when absent.  A damaged file counts as absent (logged): the
    worst outcome is provisioning this VM again, which is idempotent."""
    try:
        data = host.read_file(STATE_FILE, limit=STATE_LIMIT)
    except Exception as exc:  # unreadable, symlink, too large: not trustworthy
        log.warning("ignoring %s: %s", STATE_FILE, exc)
        return None
    if data is None:
        return None
    try:
        return State.from_json(data)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        log.warning("ignoring damaged %s: %s", STATE_FILE, exc)
        return None


def check(host: Host) -> None:
    """Refuse, before anything changes (and long before Ready), a state path :func:`save` would
    refuse after Ready: a symlinked ``/var/lib/azprov`` or state file, or one that is not a
    directory or a regular file."""
    host.check_writable(STATE_FILE)


@contextmanager
def open_state_dir(host: Host) -> Iterator[Dir]:
    """``/var/lib/azprov`` (0700, root), created when missing; also holds the attempt history."""
    with host.open_dir("/var/lib", create_mode=0o755) as var_lib:
        with var_lib.subdir("azprov", create_mode=0o700) as directory:
            directory.set_owner_mode(0o700, 0, 0)
            yield directory


def save(host: Host, state: State) -> bool:
    with open_state_dir(host) as directory:
        return directory.write("state.json", state.to_json(), mode=0o600)


def clear(host: Host) -> bool:
    return host.remove(STATE_FILE)


class Lock:
    """``flock`` on ``<root>/run/azprov/lock``, held until :meth:`release` (or process exit)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(host: Host, wait: float = LOCK_WAIT, *, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> Lock:
    """Take the run lock, waiting up to ``wait`` seconds; Busy if another run keeps it."""
    parent, name = LOCK_DIR.rsplit("/", 1)
    try:
        with host.open_dir(parent, create_mode=0o755) as run, \
                run.subdir(name, create_mode=0o700) as directory:
            fd = os.open("lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=directory.fd)
    except OSError as exc:
        raise StepFailed(f"cannot open the lock {LOCK_FILE}: {exc.strerror or exc}",
                         path=LOCK_FILE) from None
    deadline = clock() + wait
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return Lock(fd)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
        if clock() >= deadline:
            os.close(fd)
            raise Busy(f"another azprov is running (it holds {LOCK_FILE}); gave up after {wait:g} s",
                       lock=LOCK_FILE)
        if not announced:
            log.info("another azprov is running; waiting up to %g s for it to finish", wait)
            announced = True
        sleep(0.2)


def lock_held(host: Host) -> bool:
    """True while a run holds the lock (``azprov status --wait`` waits for it)."""
    try:
        fd = os.open(host.entry_path(LOCK_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: no run since boot (/run is a tmpfs)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)
    return False
