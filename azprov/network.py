"""Network configuration pinned to one MAC address: the build VM's, which no VM made from the image has.

cloud-init writes such files on the build VM (netplan ``match: macaddress``, NetworkManager
``mac-address=``, ifcfg ``HWADDR=``); an image captured with them brings up no network on a new
VM, so azprov never reaches the WireServer.  :func:`mac_pinned` finds them in an image for
``azprov check``; it reads only (configuration reads resolve symlinks inside the root).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from azprov.host import Host

MAC = r"((?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2})"


@dataclass(frozen=True)
class Pinned:
    """A network setting that pins an interface to a MAC address."""

    path: str
    kind: str  # netplan, networkd, networkmanager, ifcfg, ifupdown, udev
    mac: str
    what: str  # the setting that names the MAC


# (kind, file patterns, the line naming a MAC, the INI sections where it pins: None for any)
_RULES: Tuple[Tuple[str, Tuple[str, ...], "re.Pattern[str]", Optional[Tuple[str, ...]]], ...] = (
    ("netplan", ("/etc/netplan/*.yaml", "/etc/netplan/*.yml", "/usr/lib/netplan/*.yaml"),
     re.compile(r"^\s*(macaddress)\s*:\s*[\"']?" + MAC, re.IGNORECASE), None),
    ("networkd", ("/etc/systemd/network/*.network", "/etc/systemd/network/*.link"),
     re.compile(r"^\s*((?:Permanent)?MACAddress)\s*=\s*" + MAC), ("match",)),
    ("networkmanager", ("/etc/NetworkManager/system-connections/*",
                        "/usr/lib/NetworkManager/system-connections/*"),
     re.compile(r"^\s*(mac-address)\s*=\s*" + MAC, re.IGNORECASE),
     ("ethernet", "802-3-ethernet", "infiniband", "wifi")),
    ("ifcfg", ("/etc/sysconfig/network-scripts/ifcfg-*", "/etc/sysconfig/network/ifcfg-*"),
     re.compile(r"^\s*(HWADDR|MACADDR)\s*=\s*[\"']?" + MAC), None),
    ("ifupdown", ("/etc/network/interfaces", "/etc/network/interfaces.d/*"),
     re.compile(r"^\s*(hwaddress)\s+(?:ether\s+)?" + MAC), None),
    ("udev", ("/etc/udev/rules.d/*.rules",),
     re.compile(r"(ATTR\{address\})\s*==\s*\"" + MAC), None),
)

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")


def _scan(text: str, line_pattern: "re.Pattern[str]", sections: Optional[Tuple[str, ...]]):
    section = ""
    for line in text.splitlines():
        header = _SECTION.match(line)
        if header:
            section = header.group(1).strip().lower()
            continue
        if line.lstrip().startswith(("#", ";")):
            continue
        match = line_pattern.search(line)
        if match and (sections is None or section in sections):
            yield match.group(1), match.group(2)


def mac_pinned(host: Host) -> List[Pinned]:
    """Every network file in the image that matches or sets one fixed MAC address."""
    found = []
    for kind, patterns, line_pattern, sections in _RULES:
        for pattern in patterns:
            for path in host.glob(pattern):
                if host.is_dir(path):
                    continue
                for what, mac in _scan(host.read_text(path) or "", line_pattern, sections):
                    found.append(Pinned(path, kind, mac.lower(), what))
    return found


FIX = {
    "netplan": "replace it with a netplan file that matches `driver: hv_netvsc` with `dhcp4: true` "
               "(install-azprov.sh does this for cloud-init's 50-cloud-init.yaml)",
    "networkd": "match the NIC by Driver=hv_netvsc instead of MACAddress= in that file",
    "networkmanager": "delete that keyfile (NetworkManager's automatic wired DHCP connection covers "
                      "every NIC) or remove its mac-address= line (install-azprov.sh does this)",
    "ifcfg": "remove the HWADDR=/MACADDR= line from that file (install-azprov.sh does this)",
    "ifupdown": "remove the hwaddress line from that file",
    "udev": "remove that rule (sudo rm the file; interface names then follow the driver's order)",
}
