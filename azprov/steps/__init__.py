"""The provisioning steps, in the order the flow applies them.

Each step module has ``NAME``, ``enabled(settings)``, ``check(host, metadata, settings)`` (pure
validation of what IMDS asks for; raises before anything changes) and ``apply(host, metadata,
settings) -> bool`` (idempotent; True if it changed something).  Steps reach the system only
through :class:`azprov.host.Host`: its files and commands, and ``host.probes`` for what is running
(``tests/test_layers.py`` fails on a step that opens a file, runs a command or imports more).
"""

from __future__ import annotations

from azprov.steps import hostname, password, root_password, ssh_keys, sshd, user

# ``host_keys`` is not in the sequence: the flow starts it in the background first (see there).
STEPS = (hostname, user, password, ssh_keys, sshd, root_password)
