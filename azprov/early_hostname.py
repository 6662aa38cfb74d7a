"""``azprov early-hostname``: the VM's name from the provisioning disc, before the network starts.

Azure DNS registers the name a VM's DHCP client sends, and every DHCP client reads the host name
when it starts (systemd-networkd when it configures the link, dhclient from its configuration,
NetworkManager from the system's name).  ``azprov.service`` needs the network, so the name it sets
reaches the client only when the client is made to send it again.  This stage runs before
``network-pre.target`` (``azprov-hostname.service``, pulled in by ``azprov.service``, so only while
azprov still has a VM to provision), reads the host name Azure writes into ``ovf-env.xml`` on the
provisioning disc and makes it the kernel's host name, and, where that is what ``hostnamectl``
would do, the static one in ``/etc/hostname`` and ``/etc/hosts``: the first DHCP request of the VM
already carries its own name.  cloud-init's local stage does the same.

It only reads: the disc through azprov's own UDF and ISO9660 readers (never mounted, never ejected:
``azprov provision`` reads it again), no network, no D-Bus (it runs before the system bus), no
fabric.  Whatever goes wrong is logged and left to ``azprov provision``, which sets and validates
the name again (IMDS wins where it answers and names the VM otherwise) and reports any failure to
Azure; this command exits 0 unless azprov itself is broken.  It does nothing on a VM whose id is
recorded as provisioned, when ``[provisioning] set_hostname`` or ``[media] read`` is off, or
when another provisioner (WALinuxAgent, cloud-init) would provision this VM.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Optional

from azprov import guards
from azprov import state as state_file
from azprov.errors import AzprovError
from azprov.host import Host
from azprov.identity import read_dmi_vm_id, same_vm_id
from azprov.steps import hostname

log = logging.getLogger(__name__)


def disc_hostname(host: Host) -> Optional[str]:
    """The host name the provisioning disc carries, validated, or None (no disc, no name, a name
    azprov would refuse: then ``azprov provision`` says why)."""
    from azprov.media import disc as media
    from azprov.ovf import parse_ovf_env

    found = media.read_ovf_env(host, mount=False)
    if found is None:
        return None
    name = parse_ovf_env(found.data).hostname
    if not name:
        log.info("the provisioning disc carries no host name: azprov provision sets it from IMDS")
        return None
    return hostname.validate(name)


def skip_reason(host: Host, config) -> Optional[str]:
    """Why nothing is to be done on this boot, or None."""
    if not config.provisioning.set_hostname:
        return "[provisioning] set_hostname = false"
    if not config.media.read:
        return "[media] read = false"
    recorded = state_file.load(host)
    if recorded is not None and same_vm_id(recorded.vm_id, read_dmi_vm_id(host)):
        return f"VM {recorded.vm_id} is already provisioned"
    found = guards.other_provisioners(host)
    if found:
        return f"{found[0]}: azprov does not provision this VM"
    return None


def run(host: Host, config) -> Optional[str]:
    """Set the disc's host name before the network; the name set, or None."""
    why = skip_reason(host, config)
    if why is not None:
        log.info("host name before the network: nothing to do (%s)", why)
        return None
    try:
        name = disc_hostname(host)
        if name is None:
            return None
        hostname.set_before_network(host, name)
    except AzprovError as error:  # azprov provision meets it again, and reports it
        log.warning("host name not set before the network: %s", error)
        return None
    return name


def command(args, config, host: Host) -> int:
    """``azprov early-hostname [--root DIR] [--json]``."""
    name = run(host, config)
    if getattr(args, "json", False):
        json.dump({"hostname": name}, sys.stdout)
        sys.stdout.write("\n")
    return 0
