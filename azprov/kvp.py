"""Hyper-V KVP: the ``PROVISIONING_REPORT`` record the Azure host reads from the guest pool.

The guest-to-host pool ``/var/lib/hyperv/.kvp_pool_1`` is a flat file of records, each a
512-byte key and a 2048-byte value, UTF-8, NUL-padded; ``hv_kvp_daemon`` (hyperv-daemons) hands
them to the host.  cloud-init and azure-init put their provisioning report there under the key
``PROVISIONING_REPORT``; the host reads it together with the health report, so it is written
before every health report, and also when the WireServer cannot be reached at all.

- One record per key: an existing record is replaced where it is (duplicates another agent left
  are dropped), never appended again.  The file is rewritten in place, not renamed over:
  ``hv_kvp_daemon`` keeps its own descriptor open and locks that inode.
- Locked as ``hv_kvp_daemon`` locks it (``fcntl`` record lock over the whole file) and as
  cloud-init does (``flock``), both, for at most :data:`LOCK_WAIT` seconds.
- Values are cut to :data:`VALUE_LIMIT` bytes on a UTF-8 character boundary (the host-side
  consumers read at most 1024 bytes including the terminator); the report itself is shortened by
  whole CSV fields before that (:func:`report`), so no cut falls inside a quoted field.
- The file and its directory are created when missing; a symlink is refused.  Writing is best
  effort: a failure is logged, never fatal to provisioning.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from typing import Callable, List, Optional, Tuple

from azprov.errors import StepFailed
from azprov.host import Host
from azprov.report import fit_row, utf8_size

log = logging.getLogger(__name__)

POOL_DIR = "/var/lib/hyperv"
POOL_NAME = ".kvp_pool_1"
POOL_FILE = f"{POOL_DIR}/{POOL_NAME}"
KEY_SIZE = 512
VALUE_SIZE = 2048
RECORD_SIZE = KEY_SIZE + VALUE_SIZE
KEY_LIMIT = 254
VALUE_LIMIT = 1022
POOL_LIMIT = 16 * 1024 * 1024  # bytes of pool read; a larger pool is not ours to rewrite
LOCK_WAIT = 5.0
PROVISIONING_REPORT = "PROVISIONING_REPORT"


def cut_utf8(text: str, limit: int) -> bytes:
    """``text`` as UTF-8, at most ``limit`` bytes, never ending inside a character."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and (data[end] & 0xC0) == 0x80:  # data[end] continues the character before it
        end -= 1
    return data[:end]


def encode_record(key: str, value: str) -> bytes:
    """One pool record: the key and value cut to their limits and NUL-padded."""
    key_bytes = cut_utf8(key, KEY_LIMIT)
    value_bytes = cut_utf8(value, VALUE_LIMIT)
    return key_bytes.ljust(KEY_SIZE, b"\0") + value_bytes.ljust(VALUE_SIZE, b"\0")


def decode_record(record: bytes) -> Tuple[str, str]:
    key = record[:KEY_SIZE].split(b"\0", 1)[0].decode("utf-8", "replace")
    value = record[KEY_SIZE:RECORD_SIZE].split(b"\0", 1)[0].decode("utf-8", "replace")
    return key, value


def parse_pool(data: bytes) -> List[Tuple[str, str]]:
    """Every whole record of a pool file, in order (a partial record at the end is ignored)."""
    return [decode_record(data[at:at + RECORD_SIZE])
            for at in range(0, len(data) - RECORD_SIZE + 1, RECORD_SIZE)]


def read_pool(host: Host) -> List[Tuple[str, str]]:
    """The records of the pool (empty when there is none)."""
    data = host.read_file(POOL_FILE, limit=POOL_LIMIT)
    return parse_pool(data) if data else []


def _lock(fd: int, wait: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
    """Both locks, exclusive: the fcntl record lock (hv_kvp_daemon) and flock (cloud-init)."""
    deadline = clock() + wait
    for take in (lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB),
                 lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)):
        while True:
            try:
                take()
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if clock() >= deadline:
                raise StepFailed(f"{POOL_FILE} stayed locked by another process for {wait:g} s",
                                 path=POOL_FILE)
            sleep(0.05)


def _replace(fd: int, key: str, record: Optional[bytes]) -> None:
    """Make ``key`` hold ``record`` (None: remove it), rewriting from its first record on."""
    size = os.fstat(fd).st_size
    if size > POOL_LIMIT:
        raise StepFailed(f"{POOL_FILE} is larger than {POOL_LIMIT} bytes; not rewriting it",
                         path=POOL_FILE)
    data = os.pread(fd, size, 0) if size else b""
    whole = len(data) - len(data) % RECORD_SIZE  # a torn record at the end is overwritten
    matches = [at for at in range(0, whole, RECORD_SIZE)
               if decode_record(data[at:at + RECORD_SIZE])[0] == key]
    if not matches:
        if record is None:
            return
        at, rest = whole, b""
    else:
        at = matches[0]
        # Records after the first match, minus later duplicates of the key (azure-init appends one
        # per report): written back from the first match on.
        rest = b"".join(data[o:o + RECORD_SIZE] for o in range(at + RECORD_SIZE, whole, RECORD_SIZE)
                        if o not in matches)
    new = (record or b"") + rest
    if data[at:at + len(new)] != new or at + len(new) != len(data):
        view = memoryview(new)
        offset = at
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        os.ftruncate(fd, at + len(new))
        os.fsync(fd)


def write(host: Host, key: str, value: str, *, wait: float = LOCK_WAIT,
          clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> None:
    """Make ``key`` hold ``value`` in the pool (one record, replaced in place); StepFailed if the
    pool cannot be written."""
    _update(host, key, encode_record(key, value), wait, clock, sleep)


def remove(host: Host, key: str, *, wait: float = LOCK_WAIT) -> bool:
    """Drop every record of ``key`` (``azprov deprovision``); False when there was none."""
    if not any(k == key for k, _ in read_pool(host)):
        return False
    _update(host, key, None, wait, time.monotonic, time.sleep)
    return True


def _update(host: Host, key: str, record: Optional[bytes], wait: float,
            clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
    with host.open_dir(POOL_DIR, create_mode=0o755) as directory:
        try:
            fd = os.open(POOL_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=directory.fd)
        except OSError as exc:
            what = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be opened: {exc.strerror}"
            raise StepFailed(f"{POOL_FILE} {what}", path=POOL_FILE) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StepFailed(f"{POOL_FILE} is not a regular file", path=POOL_FILE)
        _lock(fd, wait, clock, sleep)
        try:
            _replace(fd, key, record)
        except OSError as exc:
            raise StepFailed(f"cannot write {POOL_FILE}: {exc.strerror or exc}", path=POOL_FILE) from None
    finally:
        os.close(fd)  # releases both locks


def report(host: Host, value: str) -> bool:
    """Write the ``PROVISIONING_REPORT`` record, a report row (:mod:`azprov.report`); False
    (logged) if it could not be written.  A row over :data:`VALUE_LIMIT` bytes is shortened by
    fields, so the record still reads as CSV (a byte cut could end inside a quoted field)."""
    value = fit_row(value, VALUE_LIMIT, utf8_size)
    try:
        write(host, PROVISIONING_REPORT, value)
    except (StepFailed, OSError) as exc:
        log.warning("could not write the KVP %s for the host: %s", PROVISIONING_REPORT, exc)
        return False
    log.info("KVP %s written to %s: %s", PROVISIONING_REPORT, POOL_FILE, value)
    return True
