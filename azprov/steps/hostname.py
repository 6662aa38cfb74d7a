"""Hostname: ``compute.osProfile.computerName`` as the system's name, published to Azure DNS.

The name is validated as an RFC 1123 host name (labels of 1-63 characters ``[a-z0-9-]``, no
leading or trailing hyphen, at most 64 characters in all, the Azure limit for Linux) and
lower-cased; anything else is refused with a ProvisioningFailed report, never "cleaned up".
Names that are not a name of this machine are refused too: an all-numeric last label (an IPv4
address like ``10.0.0.5``, or a number resolvers read as one), anything else ``inet_aton`` reads as
an address (``0x7f000001``), and ``localhost`` in its forms.

Set without a D-Bus round trip where that is equivalent: ``/etc/hostname`` is written (atomically)
and, on a live host, the kernel's name set with ``sethostname(2)``, which is all ``hostnamectl
set-hostname`` changes for a valid name.  systemd-hostnamed is bus-activated and, early in the first
boot, not running yet: activating it only to relay the name cost 60-200 ms of the critical path
(benchmarks/README.md).  When it is running it is told (``hostnamectl``), so that its cached
properties and change signals stay right; likewise when ``/etc/machine-info`` sets a pretty host
name, which ``hostnamectl set-hostname`` would update too, and where SELinux is enabled (hostnamed
writes the file with its own label).  Debian's ``127.0.1.1 oldname`` line in
``/etc/hosts`` follows the new name; no such line is invented where the image has none.  Azure DNS
learns the name from the DHCP client, so a live host's client is made to send it again (see
``dhcp``), unless the kernel already had the name before this step: then
``azprov early-hostname`` set it from the provisioning disc before the network came up, and the
client has sent it from its first request.
"""

from __future__ import annotations

import logging
import re

from azprov.errors import InvalidHostname, UnsafePath
from azprov.host import Host
from azprov.steps import dhcp

log = logging.getLogger(__name__)

NAME = "hostname"
MAX_LENGTH = 64  # Azure's limit for a Linux computerName (RFC 1123 alone allows 253)
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "localhost4", "localhost6",
                            "ip6-localhost", "ip6-loopback"})


def validate(computer_name: str) -> str:
    """The host name for ``computer_name`` (lower case), or InvalidHostname saying why not."""
    shown = computer_name if len(computer_name) <= 40 else computer_name[:40] + "..."
    if not computer_name:
        raise InvalidHostname("computerName is empty")
    if len(computer_name) > MAX_LENGTH:
        raise InvalidHostname(
            f"computerName is {len(computer_name)} characters, over the {MAX_LENGTH}-character limit",
            length=len(computer_name),
        )
    name = computer_name.lower() if computer_name.isascii() else ""
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            raise InvalidHostname(
                f"computerName {shown!r} is not a valid host name (RFC 1123: labels of letters, "
                "digits and inner hyphens, separated by dots)",
                computer_name=shown,
            )
    if name.rsplit(".", 1)[-1].isdigit() or _is_inet_aton_address(name):
        raise InvalidHostname(f"computerName {shown!r} looks like an IP address (its last label is "
                              "a number), not a host name", computer_name=shown)
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        raise InvalidHostname(f"computerName {shown!r} is a name of the loopback address, not of "
                              "this VM", computer_name=shown)
    return name


def _is_inet_aton_address(name: str) -> bool:
    """True for what inet_aton(3) (and so many resolvers) reads as an IPv4 address: 0x7f000001."""
    import socket

    try:
        socket.inet_aton(name)
    except OSError:
        return False
    return True


def enabled(settings) -> bool:
    return settings.set_hostname


def check(host: Host, metadata, settings) -> None:
    validate(metadata.os_profile.computer_name)
    if not host.probes.systemd_running():
        host.check_writable("/etc/hostname")


def apply(host: Host, metadata, settings) -> bool:
    name = validate(metadata.os_profile.computer_name)
    started_with = host.probes.kernel_hostname()  # the name a DHCP client running now was given
    changed = set_hostname(host, name)
    changed = update_hosts(host, name) or changed
    if settings.publish_hostname:
        if started_with == name:
            log.info("the DHCP client already sends %s (set before the network came up): "
                     "not asked again", name)
        else:
            dhcp.publish_hostname(host)
    return changed


def set_before_network(host: Host, name: str) -> bool:
    """``azprov early-hostname``: ``name`` as the kernel's host name, and as the static one
    where writing the files is all ``hostnamectl`` would do.  Never over D-Bus: the system bus
    does not run yet.  Where hostnamed must write the file itself (SELinux labels, a pretty name
    it would update), only the kernel's name is set; ``azprov provision`` sets the static one.
    False if nothing changed."""
    changed = False
    if not _hostnamed_must_be_told(host) and current_hostname(host) != name:
        host.write_file("/etc/hostname", (name + "\n").encode(), mode=0o644)
        changed = update_hosts(host, name) or True
    changed = host.set_kernel_hostname(name) or changed
    log.info("host name %s set before the network (from the provisioning disc)%s", name,
             "" if changed else ": it already was")
    return changed


def current_hostname(host: Host) -> str:
    text = host.read_text("/etc/hostname") or ""
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    return ""


def set_hostname(host: Host, name: str) -> bool:
    """Make ``name`` the static (and, on a live host, the kernel's) host name; False if it
    already was the static one."""
    if current_hostname(host) == name:
        if host.live and not host.probes.systemd_running():  # systemd set the kernel's name from the file
            host.set_kernel_hostname(name)
        return False
    if host.probes.systemd_running() and _hostnamed_must_be_told(host):
        host.run(["hostnamectl", "set-hostname", name], timeout=30)
        log.info("hostname set to %s with hostnamectl", name)
        return True
    host.write_file("/etc/hostname", (name + "\n").encode(), mode=0o644)
    if host.live:
        host.set_kernel_hostname(name)
        log.info("hostname set to %s in /etc/hostname and the kernel", name)
    else:
        log.info("hostname set to %s in /etc/hostname", name)
    return True


def _hostnamed_must_be_told(host: Host) -> bool:
    """True when writing the name ourselves would not be what ``hostnamectl`` does: hostnamed
    is running (it would keep serving and signalling its old idea of the name until it reads
    the file again), a pretty host name is set (``hostnamectl set-hostname`` replaces it), or
    SELinux is enforcing labels (hostnamed writes ``/etc/hostname`` with its own file type)."""
    if host.probes.processes("systemd-hostnamed"):
        return True
    if host.probes.selinux_enabled():
        return True
    machine_info = host.read_text("/etc/machine-info") or ""
    for line in machine_info.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "PRETTY_HOSTNAME" and value.strip().strip("\"'"):
            return True
    return False


def hosts_with_name(text: str, name: str) -> str:
    """``/etc/hosts`` text with the ``127.0.1.1`` line naming ``name`` (if there is such a line)."""
    names = f"{name} {name.split('.')[0]}" if "." in name else name
    lines = []
    for line in text.splitlines(keepends=True):
        fields = line.split("#", 1)[0].split()
        if fields and fields[0] == "127.0.1.1":
            ending = "\n" if line.endswith("\n") else ""
            line = f"127.0.1.1\t{names}{ending}"
        lines.append(line)
    return "".join(lines)


def update_hosts(host: Host, name: str) -> bool:
    text = host.read_text("/etc/hosts")
    if text is None:
        return False
    new = hosts_with_name(text, name)
    if new == text:
        return False
    try:
        changed = host.write_file("/etc/hosts", new.encode(), mode=0o644)
    except UnsafePath as exc:  # e.g. a distribution that links /etc/hosts elsewhere
        log.warning("/etc/hosts left as it is: %s", exc)
        return False
    if changed:
        log.info("/etc/hosts: 127.0.1.1 now names %s", name)
    return changed
