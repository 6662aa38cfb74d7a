"""Publishing the host name to Azure DNS: make the running DHCP client send the new name.

Azure DNS registers the name the DHCP client sends (option 12).  Each client reads the name at a
moment of its own, so a name set after the network came up reaches Azure DNS only when the client
is made to read it again, and a plain lease renewal is not always that:

- systemd-networkd reads the kernel's host name when it configures a link and keeps it for the
  life of that configuration: ``networkctl renew`` sends the old name (systemd issues #23244,
  #36440, #36792, open from v247 to v257); ``networkctl reconfigure IFACE`` configures the link
  anew and sends the current one (what flatcar's WALinuxAgent switched to).
- ISC dhclient evaluates ``send host-name = gethostname();`` when it starts: it is released and
  started again with the options it was running with.
- dhcpcd reads the host name for each message it builds: ``dhcpcd --rebind IFACE`` (it sends one
  only with ``hostname`` in dhcpcd.conf, which Debian's file lacks).
- NetworkManager: ``nmcli device reapply IFACE`` (not proven by a DHCP exchange here).

Nothing runs for an image tree (its DHCP client sends the name at its first boot), when no client
is found, or when the client already started with this name (``azprov early-hostname`` set it
before the network came up).  Publishing is best effort: a failure is logged, never fatal (the VM
works; only its DNS name lags).  The processes are found by ``/proc/PID/comm``, which the kernel
cuts to 15 characters (``systemd-network``): :meth:`azprov.host.probes.LiveProbes.processes`.
"""

from __future__ import annotations

import logging
from typing import List

from azprov.errors import CommandFailed
from azprov.host import Host

log = logging.getLogger(__name__)


def renew_commands(host: Host, interface: str) -> List[List[str]]:
    """The commands that make the running DHCP client send the current host name on
    ``interface`` (empty: no client found)."""
    if host.probes.networkd_running():
        return [["networkctl", "reconfigure", interface]]
    if host.probes.processes("NetworkManager"):
        return [["nmcli", "device", "reapply", interface]]
    for _pid, argv in host.probes.processes("dhclient"):
        if argv and argv[-1] == interface:
            options = [arg for arg in argv[1:] if arg not in ("-1", "-nw", "-r", "-x")]
            return [[argv[0], "-r", *options], [argv[0], *options]]
    if host.probes.processes("dhcpcd"):  # it rewrites its argv ("dhcpcd: [manager] [ip4]"): by name
        return [["dhcpcd", "--rebind", interface]]
    return []


def publish_hostname(host: Host) -> bool:
    """Make the live DHCP client send the host name now; True if one was asked."""
    if not host.live:
        log.debug("image tree: its DHCP client will send the host name at first boot")
        return False
    interface = host.probes.default_interface()
    if interface is None:
        log.info("no IPv4 default route: host name not republished to Azure DNS")
        return False
    commands = renew_commands(host, interface)
    if not commands:
        log.info("no running DHCP client found (networkd, NetworkManager, dhclient, dhcpcd): "
                 "host name not republished to Azure DNS now")
        return False
    try:
        for argv in commands:
            host.run(argv, timeout=60)
    except CommandFailed as exc:
        log.warning("host name not republished to Azure DNS: %s", exc)
        return False
    log.info("DHCP client on %s asked to send the new host name (%s): Azure DNS learns it",
             interface, " ; ".join(" ".join(argv) for argv in commands))
    return True
