"""Publishing the host name to Azure DNS: make the running DHCP client renew with it.

Azure DNS registers the name the DHCP client sends, so a name set after the network came up is
only published once the client renews.  Whichever client runs on a live host is asked to:
systemd-networkd (``networkctl renew IFACE``), NetworkManager (``nmcli device reapply IFACE``) or
ISC dhclient (release, then start again with the options it was running with).  Nothing runs for
an image tree (its DHCP client will send the name at its first boot) or when no client is found.
Publishing is best effort: a failure is logged, never fatal (the VM works; only its DNS name lags).
"""

from __future__ import annotations

import logging
from typing import List

from azprov.errors import CommandFailed
from azprov.host import Host

log = logging.getLogger(__name__)


def renew_commands(host: Host, interface: str) -> List[List[str]]:
    """The commands that make the running DHCP client renew on ``interface`` (empty: none runs)."""
    if host.probes.networkd_running():
        return [["networkctl", "renew", interface]]
    if host.probes.processes("NetworkManager"):
        return [["nmcli", "device", "reapply", interface]]
    for _pid, argv in host.probes.processes("dhclient"):
        if argv and argv[-1] == interface:
            options = [arg for arg in argv[1:] if arg not in ("-1", "-nw", "-r", "-x")]
            return [[argv[0], "-r", *options], [argv[0], *options]]
    return []


def publish_hostname(host: Host) -> bool:
    """Ask the live DHCP client to renew so Azure DNS learns the name; True if one was asked."""
    if not host.live:
        log.debug("image tree: its DHCP client will send the host name at first boot")
        return False
    interface = host.probes.default_interface()
    if interface is None:
        log.info("no IPv4 default route: host name not republished to Azure DNS")
        return False
    commands = renew_commands(host, interface)
    if not commands:
        log.info("no running DHCP client found (networkd, NetworkManager, dhclient): "
                 "host name not republished to Azure DNS now")
        return False
    try:
        for argv in commands:
            host.run(argv, timeout=60)
    except CommandFailed as exc:
        log.warning("host name not republished to Azure DNS: %s", exc)
        return False
    log.info("DHCP client on %s renewed: Azure DNS learns the new host name", interface)
    return True
