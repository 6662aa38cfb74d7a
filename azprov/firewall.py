"""The WireServer is root's: after provisioning, only root may open TCP connections to it.

Any process on a VM can otherwise fetch the goal state and, with a transport key of its own, the
VM's certificates.  WALinuxAgent guards against this with three rules on the WireServer address
in the OUTPUT path (its ``FirewallManager``: TCP to port 53 accepted for everyone, since Azure
DNS answers there; TCP from uid 0 accepted; new or invalid TCP connections from anyone else
dropped).  azprov sets the same policy, rejecting with a TCP reset (the caller sees "connection
refused" at once, not a time-out):

- with ``nft`` when the machine has it: its own table ``ip azprov``, replaced in one transaction
  (``table``/``delete table``/``table {...}`` in one ``nft -f``), so applying twice changes nothing;
- else with ``iptables``: its own chain ``AZPROV-WIRESERVER`` in the filter table, flushed and
  refilled, with one jump from OUTPUT.

The addresses: 168.63.129.16 and the WireServer of the DHCP lease (option 245) or the
configuration, when it is a usable IPv4 address (never loopback or link-local: IMDS at
169.254.169.254 stays open to everyone, as on Azure).  ``azprov firewall`` applies it;
``azprov-firewall.service`` runs it at every boot before user sessions, and ``azprov provision``
after Ready (the lease is there by then).  ``[wireserver] root_only = false`` turns it off: the
same command then removes azprov's rule.  A WALinuxAgent kept for extensions with
``OS.EnableFirewall=y`` sets the rule itself; azprov then leaves it to it and removes its own.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

from azprov import waagent
from azprov.endpoint import DEFAULT_WIRESERVER, discover_wireserver
from azprov.errors import AzprovError, FirewallFailed
from azprov.host import Host

log = logging.getLogger(__name__)

UNIT = "azprov-firewall.service"  # runs `azprov firewall` at every boot
TOOLS = ("nft", "iptables")  # the first one installed sets the rule
TABLE = "azprov"  # nft: table ip azprov
CHAIN = "AZPROV-WIRESERVER"  # iptables: its chain in the filter table
DNS_PORT = 53
NO_TOOL = ("neither nft nor iptables is installed: every local user can reach the WireServer "
           "(install nftables, or set [wireserver] root_only = false)")


@dataclass(frozen=True)
class Outcome:
    action: str  # applied, removed, left_to_walinuxagent, nothing_to_do, no_tool
    tool: Optional[str]  # nft, iptables or None
    addresses: Tuple[str, ...] = ()
    message: str = ""


def _usable(text: str) -> Optional[str]:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if (address.version != 4 or address.is_loopback or address.is_link_local or address.is_multicast
            or address.is_unspecified):
        return None
    return str(address)


def addresses(host: Host, config) -> Tuple[str, ...]:
    """168.63.129.16 and the WireServer this VM is told of (configuration, else DHCP option 245)."""
    found = [DEFAULT_WIRESERVER]
    configured = config.wireserver.address  # an azprov.address.Address, or None: discover
    endpoint = discover_wireserver(configured.host if configured else None, host)
    usable = _usable(endpoint.address)
    if usable is None:
        log.info("the WireServer address %s (%s) is not one to firewall", endpoint.address, endpoint.source)
    elif usable not in found:
        found.append(usable)
    return tuple(found)


def nft_script(targets: Tuple[str, ...]) -> str:
    """One ``nft -f`` transaction: (re)create ``table ip azprov`` with the three rules."""
    daddr = "{ " + ", ".join(targets) + " }"
    return (f"table ip {TABLE}\n"
            f"delete table ip {TABLE}\n"
            f"table ip {TABLE} {{\n"
            "  chain wireserver {\n"
            "    type filter hook output priority 0; policy accept;\n"
            f"    ip daddr {daddr} tcp dport {DNS_PORT} accept\n"
            f"    ip daddr {daddr} meta skuid 0 accept\n"
            f"    ip daddr {daddr} meta l4proto tcp ct state new,invalid reject with tcp reset\n"
            "  }\n"
            "}\n")


def iptables_rules(targets: Tuple[str, ...]) -> List[List[str]]:
    """The ``-A`` argument lists of azprov's chain (after ``iptables -w``)."""
    rules = []
    for target in targets:
        rules.append(["-A", CHAIN, "-d", target, "-p", "tcp", "--dport", str(DNS_PORT), "-j", "ACCEPT"])
        rules.append(["-A", CHAIN, "-d", target, "-p", "tcp", "-m", "owner", "--uid-owner", "0", "-j", "ACCEPT"])
        rules.append(["-A", CHAIN, "-d", target, "-p", "tcp", "-m", "conntrack", "--ctstate", "INVALID,NEW",
                      "-j", "REJECT", "--reject-with", "tcp-reset"])
    return rules


def tools(host: Host) -> List[str]:
    """The tools this machine has, preferred first (what :func:`apply` runs)."""
    return [name for name in TOOLS if host.which(name)]


def image_tools(host: Host) -> List[str]:
    """The tools the root has (an image tree's own, where ``azprov firewall`` on a VM of the
    image would find them), preferred first (``azprov check``)."""
    return [name for name in TOOLS if host.find_program(name)]


def _run(host: Host, argv: List[str], input: Optional[str] = None) -> int:
    return host.run(argv, timeout=30, check=False, input=input).returncode


def _checked(host: Host, argv: List[str], input: Optional[str] = None) -> None:
    result = host.run(argv, timeout=30, check=False, input=input)
    if result.returncode != 0:
        raise FirewallFailed(f"{' '.join(argv[:3])} failed (exit {result.returncode}): "
                             f"{(result.stderr or result.stdout).strip()[:300]}", tool=argv[0])


def present(host: Host) -> List[str]:
    """Which tools hold azprov's rule now."""
    held = []
    if host.which("nft") and _run(host, ["nft", "list", "table", "ip", TABLE]) == 0:
        held.append("nft")
    if host.which("iptables") and _run(host, ["iptables", "-w", "-C", "OUTPUT", "-j", CHAIN]) == 0:
        held.append("iptables")
    return held


def _apply_with(host: Host, tool: str, targets: Tuple[str, ...]) -> None:
    if tool == "nft":
        _checked(host, ["nft", "-f", "-"], input=nft_script(targets))
        return
    _run(host, ["iptables", "-w", "-N", CHAIN])  # exit 1: it exists already
    _checked(host, ["iptables", "-w", "-F", CHAIN])
    for rule in iptables_rules(targets):
        _checked(host, ["iptables", "-w", *rule])
    if _run(host, ["iptables", "-w", "-C", "OUTPUT", "-j", CHAIN]) != 0:
        _checked(host, ["iptables", "-w", "-I", "OUTPUT", "1", "-j", CHAIN])


def _remove_with(host: Host, tool: str) -> bool:
    if tool == "nft":
        if _run(host, ["nft", "list", "table", "ip", TABLE]) != 0:
            return False
        _checked(host, ["nft", "delete", "table", "ip", TABLE])
        return True
    removed = False
    for _ in range(16):  # every jump to the chain (one, unless someone added more)
        if _run(host, ["iptables", "-w", "-D", "OUTPUT", "-j", CHAIN]) != 0:
            break
        removed = True
    if _run(host, ["iptables", "-w", "-F", CHAIN]) == 0:
        _checked(host, ["iptables", "-w", "-X", CHAIN])
        removed = True
    return removed


def remove(host: Host, available: Optional[List[str]] = None) -> List[str]:
    """Remove azprov's rule wherever it is; the tools that had it."""
    return [tool for tool in (tools(host) if available is None else available) if _remove_with(host, tool)]


def apply(host: Host, config, available: Optional[List[str]] = None) -> Outcome:
    """Make the rule what the configuration says (idempotent); ``available``: the tools to use,
    first preferred (default: nft, then iptables, those installed)."""
    available = tools(host) if available is None else available
    if not config.wireserver.root_only:
        removed = remove(host, available)
        return Outcome("removed" if removed else "nothing_to_do", ",".join(removed) or None,
                       message="[wireserver] root_only = false: no rule of azprov's"
                               + (f" (removed from {', '.join(removed)})" if removed else ""))
    if waagent.manages_firewall(host):
        remove(host, available)
        return Outcome("left_to_walinuxagent", None,
                       message="WALinuxAgent (kept for extensions, OS.EnableFirewall=y) sets the "
                               "WireServer rule itself; azprov leaves it to it")
    if not available:
        return Outcome("no_tool", None, message=NO_TOOL)
    targets = addresses(host, config)
    tool = available[0]
    _apply_with(host, tool, targets)
    for other in available[1:]:
        _remove_with(host, other)  # switching tools leaves one rule
    return Outcome("applied", tool, targets,
                   f"only root may open TCP connections to {', '.join(targets)} (DNS on port 53 "
                   f"open to all), with {tool}")


def after_provisioning(host: Host, config) -> None:
    """The provisioning flow's call after Ready: a failure here is a warning, never a failure of
    the VM (the per-boot unit tries again at the next boot).  Never for an image tree
    (``--root``): the rules are this machine's."""
    if not host.live:
        return
    try:
        outcome = apply(host, config)
    except AzprovError as error:
        log.warning("could not keep the WireServer to root: %s", error)
        return
    if outcome.action == "no_tool":
        log.warning("could not keep the WireServer to root: %s", outcome.message)
        return
    log.info("WireServer firewall: %s", outcome.message)


def command(args, config, host: Host) -> int:
    """``azprov firewall [--json]``: apply the WireServer rule as the configuration says (on
    this machine: the command has no ``--root``)."""
    outcome = apply(host, config)
    if getattr(args, "json", False):
        json.dump(asdict(outcome), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(outcome.message)
    if outcome.action == "no_tool":  # said, not a failed unit at every boot of such an image
        log.warning("WireServer firewall: %s", outcome.message)
    else:
        log.info("WireServer firewall: %s", outcome.message)
    return 0
