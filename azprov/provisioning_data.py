"""What the provisioning disc and IMDS carried for the VM's owner, kept under ``/var/lib/azprov``.

- ``custom-data``: the disc's CustomData, decoded; ``user-data``: IMDS ``compute.userData``,
  decoded; ``ovf-env.xml``: the disc's document with the password redacted, for debugging.
  Each is written atomically, root-owned, mode 0600, in a 0700 directory; a file this VM's
  sources did not carry is removed, so an old one is never taken for this VM's.
- ``[custom_data] run = true`` (off by default, as in WALinuxAgent): custom data starting with
  ``#!`` runs once per VM, after Ready, as its own transient unit ``azprov-custom-data.service``
  (``systemd-run``), its output in the journal.  The script runs from a 0700 copy in
  ``/run/azprov``; the stored copy stays 0600.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional

from azprov.host import Host

log = logging.getLogger(__name__)

DIRECTORY = "/var/lib/azprov"
CUSTOM_DATA = DIRECTORY + "/custom-data"
USER_DATA = DIRECTORY + "/user-data"
OVF_COPY = DIRECTORY + "/ovf-env.xml"
SAVED = (CUSTOM_DATA, USER_DATA, OVF_COPY)
RUN_COPY = "/run/azprov/custom-data"
RUN_UNIT = "azprov-custom-data"


def _keep(host: Host, path: str, data: Optional[bytes]) -> bool:
    if data is None:
        return host.remove(path)
    return host.write_file(path, data, mode=0o600, parents=0o700)


def save(host: Host, metadata, ovf_redacted: Optional[bytes]) -> Dict[str, bool]:
    """Store (or remove) custom data, user data and the redacted ovf-env.xml; what changed."""
    changes = {
        "custom_data": _keep(host, CUSTOM_DATA, metadata.custom_data),
        "user_data": _keep(host, USER_DATA, metadata.user_data),
        "ovf_env": _keep(host, OVF_COPY, ovf_redacted),
    }
    for what, data in (("custom data", metadata.custom_data), ("user data", metadata.user_data)):
        if data is not None:
            log.info("stored %s (%d bytes, 0600)", what, len(data))
    return changes


def run_custom_data(host: Host, custom_data: Optional[bytes], enabled: bool) -> bool:
    """Start the custom data script in its own unit (after Ready); True if it was started."""
    if custom_data is None or not enabled:
        return False
    if not custom_data.startswith(b"#!"):
        log.info("custom data is not a script (no #!): not run")
        return False
    if not host.probes.systemd_running():
        log.warning("custom data not run: not the live system with systemd")
        return False
    host.write_file(RUN_COPY, custom_data, mode=0o700, parents=0o700)
    result = host.run(["systemd-run", f"--unit={RUN_UNIT}", "--no-block", "--collect",
                       "--description=azprov: the VM's custom data script", "--", RUN_COPY],
                      timeout=60, check=False)
    if result.returncode != 0:
        log.error("could not start the custom data script: %s", result.stderr.strip()[:200])
        return False
    log.info("started the custom data script as %s.service (its output is in the journal)",
             RUN_UNIT)
    return True
