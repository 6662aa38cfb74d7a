"""SSH host keys: generalized images have none; generate the missing ones before sshd starts.

``ssh-keygen -A`` (``-f ROOT`` for an image tree) creates each default key type that is missing
and works offline.  It exits 0 even when it could not write a key, so the keys are checked after.

The flow runs it in the background (:func:`start`) from its very beginning, whatever happens
next: it needs nothing from the fabric, and RSA key generation is the slowest thing on the
critical path of a first boot.  The flow waits for it (:meth:`Background.wait`) before READY=1
and on every exit path, success, failure, refusal or an unreachable fabric, so sshd always
finds its keys and a break-glass user baked into the image can log in.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import List, Optional

from azprov.errors import StepFailed
from azprov.host import Host

log = logging.getLogger(__name__)

NAME = "host_keys"
KEY_TYPES = ("rsa", "ecdsa", "ed25519")
_TEMP = re.compile(r"^ssh_host_[a-z0-9]+_key(\.pub)?\.[A-Za-z0-9]{10}$")  # ssh-keygen's mkstemp names
_FIELDS = {"AZPROV_STEP": NAME}  # logged from the background thread, whatever step the flow is in


def missing(host: Host) -> List[str]:
    return [kind for kind in KEY_TYPES if not host.lexists(f"/etc/ssh/ssh_host_{kind}_key")]


def enabled(settings) -> bool:
    return settings.generate_host_keys


def check(host: Host, metadata, settings) -> None:
    return None


def apply(host: Host, metadata, settings) -> bool:
    if not host.is_dir("/etc/ssh"):
        log.info("no /etc/ssh: sshd is not installed, no host keys to generate", extra=_FIELDS)
        return False
    absent = missing(host)
    if not absent:
        return False
    for leftover in host.glob("/etc/ssh/ssh_host_*_key*.*"):  # a killed ssh-keygen's temp files
        if _TEMP.match(leftover.rsplit("/", 1)[-1]):
            host.remove(leftover)
    host.run(["ssh-keygen", "-A", *host.root_option("-f")], timeout=300)
    still = missing(host)
    if still:
        raise StepFailed(f"ssh-keygen -A did not create the {', '.join(still)} host key(s)",
                         missing=",".join(still))
    log.info("generated SSH host keys: %s", ", ".join(absent), extra=_FIELDS)
    return True


class Background:
    """``apply`` in a thread (ssh-keygen is a subprocess: the GIL is not held while it runs)."""

    def __init__(self, host: Host, settings) -> None:
        self.changed: Optional[bool] = None
        self.error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        if host.is_dir("/etc/ssh") and missing(host):
            log.info("step %s: started in the background (missing: %s)", NAME, ", ".join(missing(host)),
                     extra=_FIELDS)
            self._thread = threading.Thread(target=self._run, args=(host, settings), name=NAME,
                                            daemon=True)
            self._thread.start()
        else:
            self.changed = False

    def _run(self, host: Host, settings) -> None:
        try:
            self.changed = apply(host, None, settings)
        except BaseException as exc:  # handed to whoever waits
            self.error = exc

    def wait(self) -> bool:
        """True if keys were generated; raises what generating them raised."""
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error
        return bool(self.changed)


def start(host: Host, settings) -> Optional[Background]:
    """Start generating the missing host keys in the background; None when turned off."""
    if not enabled(settings):
        log.info("step %s: skipped (turned off in the configuration)", NAME)
        return None
    return Background(host, settings)
