"""Who formats and mounts the temporary disk: exactly one of azprov, WALinuxAgent, cloud-init and
azure-vm-utils must (two race for the same device at boot; none leaves ``/mnt`` empty).

- azprov: ``[temp_disk] enabled`` (the default) and ``azprov-temp-disk.service`` enabled.
- WALinuxAgent: installed, its unit enabled and ``ResourceDisk.Format=y`` in
  ``/etc/waagent.conf`` (its daemon activates the resource disk only then:
  ``conf.get_switch("ResourceDisk.Format", False)``, a missing key means no; WALinuxAgent's
  generic waagent.conf ships ``y``, Ubuntu's ``n``).
- cloud-init: an fstab line of its own for the disk (``comment=cloudconfig``, see
  :mod:`azprov.disks.fstab`); ``deprovision`` removes it.
- azure-vm-utils: ``azure-ephemeral-disk-setup.service`` enabled (opt-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

from azprov import waagent
from azprov.disks import fstab
from azprov.host import Host
from azprov.unit import wanted

UNIT = "azprov-temp-disk.service"
AZURE_VM_UTILS_UNIT = "azure-ephemeral-disk-setup.service"


@dataclass(frozen=True)
class Owner:
    name: str  # azprov, WALinuxAgent, cloud-init, azure-vm-utils
    why: str
    fix: str  # how to make it stop owning the disk


def owners(host: Host, enabled: bool) -> List[Owner]:
    """Everything set up to format the temporary disk at boot (``enabled``: azprov's setting)."""
    found = []
    if enabled and wanted(host, UNIT):
        found.append(Owner("azprov", f"{UNIT} is enabled and [temp_disk] enabled = true",
                           "set enabled = false in [temp_disk] of /etc/azprov/azprov.toml"))
    if (waagent.binary(host) and waagent.unit_link(host)
            and waagent.switch(waagent.conf(host), "ResourceDisk.Format", False)):
        found.append(Owner("WALinuxAgent", f"ResourceDisk.Format=y in {waagent.CONF}",
                           f"set ResourceDisk.Format=n in {waagent.CONF}"))
    lines = [entry for entry in fstab.entries(host.read_text(fstab.FSTAB) or "")
             if fstab.agent_line(entry) == "cloud-init" and "/dev/disk/cloud/azure_resource" in entry.spec]
    if lines:
        found.append(Owner("cloud-init", f"its line {lines[0].text.strip()!r} in {fstab.FSTAB}",
                           "sudo azprov deprovision --force (removes it)"))
    if wanted(host, AZURE_VM_UTILS_UNIT):
        found.append(Owner("azure-vm-utils", f"{AZURE_VM_UTILS_UNIT} is enabled",
                           f"sudo systemctl disable {AZURE_VM_UTILS_UNIT}"))
    return found


def describe(found: List[Owner]) -> Tuple[str, str]:
    """``(owner, explanation)`` for status and check: the one owner, "none" or "conflict"."""
    if not found:
        return "none", "nothing formats the temporary disk: /mnt stays empty on VMs from this image"
    if len(found) == 1:
        return found[0].name, found[0].why
    return "conflict", "; ".join(f"{owner.name} ({owner.why})" for owner in found)
