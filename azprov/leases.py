"""Where DHCP clients keep their leases: one list for WireServer discovery (``endpoint``, which
reads option 245 from them) and for ``deprovision`` (which removes them from an image).

Each row is the kind of lease file (how ``endpoint`` parses it) and an in-root glob pattern.  To
support another DHCP client, add its rows here, and a parser for a new kind in ``endpoint``.
"""

from __future__ import annotations

from typing import Tuple

LEASE_FILES: Tuple[Tuple[str, str], ...] = (
    ("networkd", "/run/systemd/netif/leases/*"),
    ("dhclient", "/var/lib/dhcp/dhclient*.leases"),
    ("dhclient", "/var/lib/dhclient/dhclient-*.lease*"),
    ("dhclient", "/var/lib/NetworkManager/dhclient-*.lease"),
    ("networkd", "/var/lib/NetworkManager/internal-*.lease"),  # NetworkManager's own client
    ("dhcpcd", "/var/lib/dhcpcd/*.lease"),
    ("dhcpcd", "/var/lib/dhcpcd5/*.lease"),
)
