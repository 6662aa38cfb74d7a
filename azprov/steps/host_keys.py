"""SSH host keys: generalized images have none; generate the missing ones before sshd starts.

``ssh-keygen -A`` (``-f ROOT`` for an image tree) creates each default key type that is missing
and works offline.  It exits 0 even when it could not write a key, so the keys are checked after.

The flow runs :func:`apply` in a background thread from its very beginning when :func:`needed`,
whatever happens next: it needs nothing from the fabric, and RSA key generation is the slowest
thing on the critical path of a first boot.  The flow waits for it before READY=1 and on every
exit path, success, failure, refusal or an unreachable fabric, so sshd always finds its keys and
a break-glass user baked into the image can log in.
"""

from __future__ import annotations

import logging
import re
from typing import List

from azprov.errors import StepFailed
from azprov.host import Host

log = logging.getLogger(__name__)

NAME = "host_keys"
KEY_TYPES = ("rsa", "ecdsa", "ed25519")
_TEMP = re.compile(r"^ssh_host_[a-z0-9]+_key(\.pub)?\.[A-Za-z0-9]{10}$")  # ssh-keygen's mkstemp names
_FIELDS = {"AZPROV_STEP": NAME}  # for the line that starts it, whatever step the flow is in


def missing(host: Host) -> List[str]:
    return [kind for kind in KEY_TYPES if not host.lexists(f"/etc/ssh/ssh_host_{kind}_key")]


def enabled(settings) -> bool:
    return settings.generate_host_keys


def check(host: Host, metadata, settings) -> None:
    return None


def apply(host: Host, metadata, settings) -> bool:
    if not host.is_dir("/etc/ssh"):
        log.info("no /etc/ssh: sshd is not installed, no host keys to generate")
        return False
    absent = missing(host)
    if not absent:
        return False
    for leftover in host.glob("/etc/ssh/ssh_host_*_key*.*"):  # a killed ssh-keygen's temp files
        if _TEMP.match(leftover.rsplit("/", 1)[-1]):
            host.remove(leftover)
    if not host.live:  # ssh-keygen -f ROOT follows links as this machine sees them
        host.tool_path("/etc/ssh")
    host.run(["ssh-keygen", "-A", *host.root_option("-f")], timeout=300)
    still = missing(host)
    if still:
        raise StepFailed(f"ssh-keygen -A did not create the {', '.join(still)} host key(s)",
                         missing=",".join(still))
    log.info("generated SSH host keys: %s", ", ".join(absent))
    return True


def needed(host: Host, settings) -> bool:
    """True when keys are missing and generating them is on: the flow then runs :func:`apply`
    in the background from its start (logged here, as the step's start)."""
    if not enabled(settings):
        log.info("step %s: skipped (turned off in the configuration)", NAME)
        return False
    absent = missing(host) if host.is_dir("/etc/ssh") else []
    if absent:
        log.info("step %s: started in the background (missing: %s)", NAME, ", ".join(absent),
                 extra=_FIELDS)
    return bool(absent)
