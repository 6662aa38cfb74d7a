"""SSH host keys: generalized images have none; generate the missing ones before sshd starts.

``ssh-keygen -A`` (``-f ROOT`` for an image tree) creates each default key type that is missing
and works offline.  It exits 0 even when it could not write a key, so the keys are checked after.
"""

from __future__ import annotations

import logging
from typing import List

from azprov.errors import StepFailed
from azprov.host import Host

log = logging.getLogger(__name__)

NAME = "host_keys"
KEY_TYPES = ("rsa", "ecdsa", "ed25519")


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
    host.run(["ssh-keygen", "-A", *host.root_option("-f")], timeout=300)
    still = missing(host)
    if still:
        raise StepFailed(f"ssh-keygen -A did not create the {', '.join(still)} host key(s)",
                         missing=",".join(still))
    log.info("generated SSH host keys: %s", ", ".join(absent))
    return True
