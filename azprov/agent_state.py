"""Other agents' per-VM state, which a captured image must not carry.

A build VM created from a marketplace image was provisioned by WALinuxAgent or cloud-init, and
they keep what they got from the platform:

- WALinuxAgent, in ``/var/lib/waagent``: the provisioning disc's ``ovf-env.xml`` (custom data and
  all), the certificates and the transport key pair, the ``provisioned`` marker with the VM id,
  goal state, extensions configuration and history files, and a directory per VM extension it
  ran (``Publisher.Type-version``, with its settings); its logs are ``/var/log/waagent.log*``
  and ``/var/log/azure`` (the extensions' logs).  ``waagent -deprovision`` itself removes the
  whole directory and both logs; so does azprov, keeping ``/etc/waagent.conf`` and the agent's
  package (kept for extensions, WALinuxAgent rebuilds its directory at the next start).
- cloud-init, in ``/var/lib/cloud``: ``instance`` (a link to this VM's ``instances/<id>``),
  ``instances``, ``data`` (instance id, previous host name, results), ``seed`` (the Azure data
  source copies ``ovf-env.xml`` there), ``sem`` and ``handlers``; its logs
  ``/var/log/cloud-init.log`` and ``/var/log/cloud-init-output.log``.  Image content
  (``/var/lib/cloud/scripts``, ``/etc/cloud``) stays.

``deprovision`` removes them; ``check`` names what it finds (secrets, markers, extension
directories by name), so an image that still has them fails the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from azprov import waagent
from azprov.host import Host

CLOUD_DIR = "/var/lib/cloud"
CLOUD_PER_INSTANCE = ("instance", "instances", "data", "seed", "sem", "handlers")
WAAGENT_LOGS = ("/var/log/waagent.log", "/var/log/waagent.log.*", "/var/log/azure")
CLOUD_INIT_LOGS = ("/var/log/cloud-init.log", "/var/log/cloud-init-output.log")
SHOWN = 8  # names listed per kind in a problem


@dataclass(frozen=True)
class Leftover:
    path: str
    agent: str  # "WALinuxAgent" or "cloud-init"
    kind: str  # secret, marker, extension, agent, state, instance, log


def _waagent(host: Host) -> List[Leftover]:
    found = [Leftover(path, "WALinuxAgent", waagent.kind(path.rsplit("/", 1)[1]))
             for path in waagent.state_entries(host)]
    for pattern in WAAGENT_LOGS:
        found.extend(Leftover(path, "WALinuxAgent", "log") for path in host.glob(pattern))
    return found


def _cloud_init(host: Host) -> List[Leftover]:
    found = []
    for name in CLOUD_PER_INSTANCE:
        path = f"{CLOUD_DIR}/{name}"
        if host.lexists(path):
            found.append(Leftover(path, "cloud-init", "secret" if name == "seed" else "instance"))
    for pattern in CLOUD_INIT_LOGS:
        found.extend(Leftover(path, "cloud-init", "log") for path in host.glob(pattern))
    return found


def find(host: Host, agent: str) -> List[Leftover]:
    """What ``agent`` ("WALinuxAgent" or "cloud-init") left of the VM it ran on."""
    return _waagent(host) if agent == "WALinuxAgent" else _cloud_init(host)


AGENTS = ("WALinuxAgent", "cloud-init")


def remove(host: Host, leftovers: List[Leftover]) -> int:
    """Remove them (directories with everything below them, links not followed)."""
    return sum(host.remove_tree(item.path) for item in leftovers)


def describe(leftovers: List[Leftover]) -> str:
    """``secrets: a, b; extension directories: c; ...`` (names only, a few per kind)."""
    labels = (("secret", "secrets"), ("marker", "markers"), ("extension", "extension directories"),
              ("agent", "downloaded agents"), ("instance", "per-instance data"), ("state", "other state"),
              ("log", "logs"))
    parts = []
    for kind, label in labels:
        names = [item.path.rsplit("/", 1)[1] if item.kind != "log" and item.path.startswith(waagent.LIB_DIR)
                 else item.path for item in leftovers if item.kind == kind]
        if names:
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            parts.append(f"{label}: {', '.join(names[:SHOWN])}{more}")
    return "; ".join(parts)
