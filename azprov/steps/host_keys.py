"""SSH host keys: every VM gets its own, and sshd can load every key it is given.

- **A new VM gets new keys.**  On a VM id azprov has not provisioned (nor made host keys for)
  before, the image's host keys are replaced: an image captured without ``azprov deprovision``
  (a snapshot, a VHD from elsewhere) would otherwise give every VM the same keys, and whoever
  holds one VM's private key could impersonate the others.  ``[provisioning] keep_host_keys``
  keeps them, for people who pin an image's keys on purpose.
- **A key sshd cannot load is made again**: missing, empty, truncated, not a regular file, or
  refused by ``ssh-keygen -y`` (the parser sshd itself uses).  A ``.pub`` that does not match
  its private key is rewritten from it.
- **Which keys**: the ``HostKey`` files of the image's sshd configuration (read as sshd does);
  without any, sshd's defaults (RSA, ECDSA, Ed25519 in ``/etc/ssh``).  The fast types first.
- Each key is made with ``ssh-keygen -t TYPE`` into a temporary name, then written in place
  atomically and synced (file and directory: :meth:`Host.write_file`), so a key sshd reads after
  ``READY=1`` is on disk, whatever power cut follows.  ``/var/lib/azprov/host-keys`` records the
  VM id the keys were made for, so a VM whose first provisioning failed keeps the keys of its
  first boot on the next try.
- The old keys' fingerprints and the new ones are logged; the fingerprints of the keys sshd
  will serve go to the serial console as ``SSH host key TYPE SHA256:...`` lines, so a user can
  check the first connection.

The flow runs :func:`apply` in a background thread from its very beginning (:func:`plan` says
whether): it needs nothing from the fabric, and RSA key generation is the slowest thing on the
critical path of a first boot.  The flow waits for it before READY=1 and on every exit path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import stat
import struct
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from azprov.errors import CommandFailed, StepFailed
from azprov.host import Host
from azprov.host import sshd_config

log = logging.getLogger(__name__)

NAME = "host_keys"
SSH_DIR = "/etc/ssh"
MARKER = "/var/lib/azprov/host-keys"  # the VM id the keys were made for ("" without one)
KEY_TYPES = ("ed25519", "ecdsa", "rsa")  # sshd's default host keys, fastest to make first
SLOW_TYPES = ("rsa",)  # a prime search: 0.3-2 s; the others take milliseconds
KEYGEN_UNITS = ("/usr/lib/systemd/system/sshd-keygen@.service", "/lib/systemd/system/sshd-keygen@.service")
_ALGORITHMS = {"ssh-ed25519": "ed25519", "ecdsa-sha2-nistp256": "ecdsa", "ecdsa-sha2-nistp384": "ecdsa",
               "ecdsa-sha2-nistp521": "ecdsa", "ssh-rsa": "rsa"}
_NAMED = re.compile(r"^ssh_host_(rsa|ecdsa|ed25519|dsa)_key$")
_TEMP = re.compile(r"^ssh_host_[a-z0-9]+_key(\.pub)?\.[A-Za-z0-9]{10}$")  # ssh-keygen -A's mkstemp names
_OWN_TEMP = ".azprov-keygen-"  # ours: /etc/ssh/.azprov-keygen-<hex> and its .pub
_FIELDS = {"AZPROV_STEP": NAME}  # for the line that starts it, whatever step the flow is in
KEY_LIMIT = 64 * 1024
MARKER_LIMIT = 1024


@dataclass(frozen=True)
class HostKey:
    """One host key sshd is configured to load: its private key file and its type."""

    path: str
    kind: str

    @property
    def public(self) -> str:
        return self.path + ".pub"


@dataclass(frozen=True)
class Plan:
    """What the background run does: ``replace`` the image's keys (a new VM), or only make
    the missing and broken ones; ``vm_id`` is recorded with the keys."""

    replace: bool
    vm_id: Optional[str]


def enabled(settings) -> bool:
    return settings.generate_host_keys


def check(host: Host, metadata, settings) -> None:
    return None


def plan(host: Host, settings, *, vm_id: Optional[str], known_vm: bool) -> Optional[Plan]:
    """What to do about the host keys of this run, logged as the step's start; None when the
    step is off or there is no sshd.  ``known_vm``: the flow's state says this VM is provisioned."""
    if not enabled(settings):
        log.info("step %s: skipped (turned off in the configuration)", NAME)
        return None
    if not host.is_dir(SSH_DIR):
        log.info("no /etc/ssh: sshd is not installed, no host keys to generate")
        return None
    made_for = _made_for(host)
    replace = not known_vm and not (made_for is not None and made_for == (vm_id or "").lower())
    if replace and settings.keep_host_keys:
        log.info("step %s: started in the background (a new VM; keeping the image's keys as "
                 "[provisioning] keep_host_keys says, making missing or broken ones)", NAME, extra=_FIELDS)
        replace = False
    elif replace:
        log.info("step %s: started in the background (a new VM: new SSH host keys)", NAME, extra=_FIELDS)
    else:
        log.info("step %s: started in the background (checking the SSH host keys)", NAME, extra=_FIELDS)
    return Plan(replace=replace, vm_id=vm_id)


def apply(host: Host, metadata, settings, run: Optional[Plan] = None,
          early: Optional[Callable[[], None]] = None) -> bool:
    """Make the keys the plan asks for; True if any was written.

    ``early()`` is called once sshd can start on the keys made or kept so far while the slow
    ones (RSA) are still to be made (see :func:`_can_start_early`); they are then made after it,
    and sshd is told about them where it needs to be (:func:`_tell_sshd`)."""
    run = run or Plan(replace=False, vm_id=None)
    _remove_temp_files(host)
    keys = configured_keys(host)
    written: List[HostKey] = []
    released = False
    for key in keys:
        reason, derived = ("a new VM", None) if run.replace else _check(host, key)
        if reason is None:
            _repair_public(host, key, derived)
            continue
        if key.kind in SLOW_TYPES and not released and early is not None and _can_start_early(host, keys):
            log.info("sshd can start on the %s keys; the %s key follows", ", ".join(
                k.kind for k in keys if k.kind not in SLOW_TYPES), key.kind)
            early()
            released = True
        _replace(host, key, reason)
        written.append(key)
    if written or run.replace:
        host.write_file(MARKER, ((run.vm_id or "").lower() + "\n").encode(), mode=0o600, parents=0o700)
    _show_fingerprints(host, keys, new=bool(written))
    if written:
        log.info("generated SSH host keys: %s", ", ".join(k.kind for k in written))
    if released:
        _tell_sshd(host)
    return bool(written)


def _replace(host: Host, key: HostKey, reason: str) -> None:
    old = _fingerprint_of_file(host, key.public) if host.lexists(key.path) else None
    if old is not None:
        log.info("replacing SSH host key %s (%s %s): %s", key.path, key.kind.upper(), old, reason)
    elif host.lexists(key.path):
        log.info("replacing SSH host key %s: %s", key.path, reason)
    _generate(host, key)


# --- sshd before the slow keys ------------------------------------------------------------------

def _can_start_early(host: Host, keys: List[HostKey]) -> bool:
    """True when sshd can start before the slow keys exist: another configured key is sound (made
    already or kept), and no keygen unit of the image would make the missing key itself when
    sshd starts (Fedora/RHEL's ``sshd-keygen@.service``, racing ours)."""
    if not any(key.kind not in SLOW_TYPES for key in keys):  # made or checked by now (fast first)
        return False
    return not any(host.lexists(unit) for unit in KEYGEN_UNITS)


def _tell_sshd(host: Host) -> None:
    """After the slow keys were made behind a running sshd: OpenSSH 9.8 and later load host keys
    once, in the listener (which hands them to each ``sshd-session``), so a key that appears later
    is served only after a reload; before 9.8 each connection's re-executed sshd read them from
    disk (checked with OpenSSH 9.2: served without a reload), and a reload would only close the
    listener for a moment."""
    if not host.probes.systemd_running():
        return
    version = _openssh_version(host)
    if version is not None and version < (9, 8):
        return
    log.info("reloading sshd (OpenSSH %s) so that it serves the new %s key",
             ".".join(map(str, version)) if version else "of unknown version", "/".join(SLOW_TYPES))
    host.run(["systemctl", "--no-block", "try-reload-or-restart", "ssh.service", "sshd.service"],
             timeout=60, check=False)


def _openssh_version(host: Host) -> Optional[Tuple[int, int]]:
    """(major, minor) of the OpenSSH installed (``ssh -V``: same package as sshd), or None."""
    result = host.run(["ssh", "-V"], check=False, timeout=30)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stderr + result.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else None


# --- which keys ---------------------------------------------------------------------------------

def configured_keys(host: Host) -> List[HostKey]:
    """The host keys sshd loads: its ``HostKey`` lines (in order, types azprov can make), else
    its default three; fastest types first."""
    lines = [d for d in sshd_config.directives(host) if d.keyword == "hostkey"]
    if not lines:
        keys = [HostKey(f"{SSH_DIR}/ssh_host_{kind}_key", kind) for kind in KEY_TYPES]
    else:
        keys = []
        for directive in lines:
            key = _from_directive(host, directive.value)
            if key is not None and key not in keys:
                keys.append(key)
    return sorted(keys, key=lambda k: KEY_TYPES.index(k.kind))


def _from_directive(host: Host, value: str) -> Optional[HostKey]:
    path = value.strip().strip('"')
    if not path.startswith("/") or ".." in path.split("/") or "%" in path:
        log.warning("HostKey %r is not an absolute path azprov can use: left alone", value[:200])
        return None
    path = os.path.normpath(path)
    named = _NAMED.match(os.path.basename(path))
    kind = named.group(1) if named else _kind_of(host, path + ".pub")
    if kind == "dsa":
        log.warning("HostKey %s is a DSA key: azprov makes none (OpenSSH dropped DSA)", path)
        return None
    if kind is None:
        log.warning("HostKey %s: neither its name nor a readable .pub says its type: left alone", path)
        return None
    return HostKey(path, kind)


def _kind_of(host: Host, public: str) -> Optional[str]:
    parsed = _parse_public(_read(host, public))
    return _ALGORITHMS.get(parsed[0]) if parsed else None


# --- is a key usable ----------------------------------------------------------------------------

def _check(host: Host, key: HostKey) -> Tuple[Optional[str], Optional[Tuple[str, bytes, str]]]:
    """``(why sshd could not load key, None)``, or ``(None, its public key)`` as ``ssh-keygen -y``
    (sshd's own parser) derives it from the private key."""
    info = host.lstat(key.path)
    if info is None:
        return "missing", None
    if not _regular(info):
        return "not a regular file", None
    if info.st_size == 0:
        return "empty", None
    result = host.run(["ssh-keygen", "-y", "-P", "", "-f", host.tool_path(key.path)], check=False, timeout=60)
    parsed = _parse_public(result.stdout.encode()) if result.returncode == 0 else None
    if parsed is None:
        return "ssh-keygen cannot read it", None
    if _ALGORITHMS.get(parsed[0]) != key.kind:
        return f"a {parsed[0]} key where sshd expects {key.kind}", None
    return None, parsed


def _repair_public(host: Host, key: HostKey, derived: Tuple[str, bytes, str]) -> None:
    """Rewrite a kept key's ``.pub`` from its private key when it is missing or does not match."""
    info = host.lstat(key.public)
    present = _parse_public(_read(host, key.public)) if info is not None and _regular(info) else None
    if present is None or present[:2] != derived[:2]:
        log.info("rewriting %s from its private key (it was %s)", key.public,
                 "missing" if info is None else "not its public key")
        if info is not None and not _regular(info):
            host.remove(key.public)
        host.write_file(key.public, _public_line(derived), mode=0o644)


def _regular(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode)


# --- making one key -----------------------------------------------------------------------------

def _generate(host: Host, key: HostKey) -> None:
    """``ssh-keygen -t KIND`` into a temporary name beside the key, then the private key and its
    ``.pub`` written in place atomically, synced; the temporary files removed."""
    directory = os.path.dirname(key.path)
    if not host.is_dir(directory):
        raise StepFailed(f"{directory} does not exist: cannot make the host key {key.path}", path=key.path)
    temp = f"{directory}/{_OWN_TEMP}{secrets.token_hex(8)}"
    try:
        try:
            host.run(["ssh-keygen", "-q", "-t", key.kind, "-N", "", "-C", "", "-f", host.tool_path(temp)],
                     timeout=300)
        except CommandFailed as exc:
            raise StepFailed(f"could not make the {key.kind} host key {key.path}: {exc}", path=key.path) from None
        private, public = _read(host, temp), _parse_public(_read(host, temp + ".pub"))
        if not private or public is None or _ALGORITHMS.get(public[0]) != key.kind:
            raise StepFailed(f"ssh-keygen did not make the {key.kind} host key {key.path}", path=key.path)
        for path in (key.path, key.public):  # a planted link is removed, never written through
            if host.is_link(path):
                host.remove(path)
        host.write_file(key.path, private, mode=0o600)
        host.write_file(key.public, _public_line(public), mode=0o644)
    finally:
        host.remove(temp)
        host.remove(temp + ".pub")


def _remove_temp_files(host: Host) -> None:
    """Temporary files of a killed ``ssh-keygen -A`` or of a killed run of this step."""
    for leftover in host.glob(f"{SSH_DIR}/ssh_host_*") + host.glob(f"{SSH_DIR}/{_OWN_TEMP}*"):
        name = leftover.rsplit("/", 1)[-1]
        if _TEMP.match(name) or name.startswith(_OWN_TEMP):
            host.remove(leftover)


# --- public keys and fingerprints ---------------------------------------------------------------

def _read(host: Host, path: str) -> Optional[bytes]:
    try:
        return host.read_file(path, KEY_LIMIT)
    except (OSError, StepFailed):
        return None


def _parse_public(data: Optional[bytes]) -> Optional[Tuple[str, bytes, str]]:
    """``(algorithm, key blob, comment)`` of a one-line OpenSSH public key whose blob names the
    same algorithm; None for anything else."""
    if not data:
        return None
    words = data.decode("ascii", "replace").strip().split(None, 2)
    if len(words) < 2 or words[0] not in _ALGORITHMS:
        return None
    try:
        blob = base64.b64decode(words[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(blob) < 4:
        return None
    (size,) = struct.unpack(">I", blob[:4])
    if blob[4:4 + size] != words[0].encode():
        return None
    return words[0], blob, words[2] if len(words) > 2 else ""


def _public_line(parsed: Tuple[str, bytes, str]) -> bytes:
    return f"{parsed[0]} {base64.b64encode(parsed[1]).decode()}\n".encode()


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob (as ``ssh-keygen -l`` prints it)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _fingerprint_of_file(host: Host, public: str) -> Optional[str]:
    parsed = _parse_public(_read(host, public))
    return fingerprint(parsed[1]) if parsed else None


def _show_fingerprints(host: Host, keys: List[HostKey], *, new: bool) -> None:
    """The fingerprints of the keys sshd will serve, one ``SSH host key TYPE SHA256:...`` line
    each (the console shows them: Azure boot diagnostics)."""
    shown = [(key, _fingerprint_of_file(host, key.public)) for key in keys]
    shown = [(key, print_) for key, print_ in shown if print_ is not None]
    if not shown:
        return
    log.info("SSH host key fingerprints of this VM (%s); compare them when you first connect:",
             "new keys" if new else "kept keys")
    for key, print_ in shown:
        log.info("SSH host key %s %s", key.kind.upper(), print_)


def _made_for(host: Host) -> Optional[str]:
    """The VM id ``/var/lib/azprov/host-keys`` says the keys were made for ("" without an id),
    or None without a usable record."""
    data = _read(host, MARKER)
    if data is None or len(data) > MARKER_LIMIT:
        return None
    return data.decode("ascii", "replace").strip().lower()
