"""The provisioning steps, in the order the flow applies them.

Each step module has ``NAME``, ``enabled(settings)``, ``check(host, metadata, settings)`` (pure
validation of what IMDS asks for; raises before anything changes) and ``apply(host, metadata,
settings) -> bool`` (idempotent; True if it changed something).  Steps reach the system only
through :class:`azprov.host.Host`.
"""

from __future__ import annotations

from azprov.steps import host_keys, hostname, ssh_keys, sshd, user

STEPS = (hostname, user, ssh_keys, sshd, host_keys)
