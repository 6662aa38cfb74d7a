"""WALinuxAgent next to azprov, judged the way WALinuxAgent itself decides.

What WALinuxAgent does at boot depends on one setting, ``Provisioning.Agent`` in
``/etc/waagent.conf`` (WALinuxAgent 2.2.45 and later; ``Provisioning.Enabled`` and
``Provisioning.UseCloudInit`` have been ignored since then):

- ``disabled``: it writes its ``provisioned`` marker, posts Ready at once and only runs VM
  extensions.  This is the one mode azprov accepts ("extensions only").
- ``auto`` (also when the key is absent or ``None``): cloud-init provisions when
  ``systemctl is-enabled cloud-init-local.service`` says ``enabled``; WALinuxAgent then waits for
  it (below).  Otherwise WALinuxAgent provisions the VM itself.
- ``waagent``: WALinuxAgent provisions the VM itself (user, keys, its own Ready).
- ``cloud-init``: WALinuxAgent waits up to 1800 s for cloud-init to copy ``ovf-env.xml`` into
  ``/var/lib/waagent``, then reports NotReady/ProvisioningFailed: a VM azprov made Ready turns
  into a failed one half an hour later.
- anything else: WALinuxAgent's code treats it like ``disabled``, but it is not a documented
  value, so azprov asks for ``disabled`` written out.

The configuration is read as WALinuxAgent's parser reads it: lines starting with ``#`` are
skipped, the key is case-sensitive and stripped, the value ends at ``#`` and loses quotes and
blanks, the last line wins, and ``None`` means unset.  Whether WALinuxAgent runs at all is
whether its unit is enabled (``walinuxagent.service`` on Debian/Ubuntu, ``waagent.service`` on
RPM distributions).

The module also knows WALinuxAgent's per-VM state (for ``deprovision`` and ``check``) and whether
it manages its own firewall rule for the WireServer (``OS.EnableFirewall``, default off).
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

from azprov.host import Host

log = logging.getLogger(__name__)

BINARIES = ("/usr/sbin/waagent", "/usr/bin/waagent", "/usr/local/sbin/waagent")
UNITS = ("walinuxagent.service", "waagent.service")
CONF = "/etc/waagent.conf"
CLOUD_INIT_LOCAL = "cloud-init-local.service"
AGENT_KEY = "Provisioning.Agent"
EXTENSIONS_ONLY = "disabled"
FIREWALL_KEY = "OS.EnableFirewall"
CLOUD_INIT_WAIT = 1800  # seconds WALinuxAgent waits for cloud-init's ovf-env.xml

# What WALinuxAgent does, one word each (docs/images/README.md has the table).
ABSENT = "absent"  # not installed
NOT_ENABLED = "not_enabled"  # installed, its unit not enabled: it never starts
EXTENSIONS = "extensions_only"
PROVISIONS = "provisions"
WAITS_FOR_CLOUD_INIT = "waits_for_cloud_init"
UNDOCUMENTED = "undocumented_value"

FIX = ("set Provisioning.Agent=disabled in /etc/waagent.conf to keep it for VM extensions, or "
       "remove it: sudo apt-get purge waagent walinuxagent (dnf remove WALinuxAgent)")


@dataclass(frozen=True)
class Verdict:
    """What WALinuxAgent will do on a VM from this image, and why."""

    outcome: str
    agent: Optional[str] = None  # Provisioning.Agent as WALinuxAgent reads it (None: unset → auto)
    binary: Optional[str] = None
    unit_link: Optional[str] = None
    why: str = ""

    @property
    def extensions_only(self) -> bool:
        return self.outcome == EXTENSIONS

    @property
    def problem(self) -> bool:
        """WALinuxAgent would provision, wait for cloud-init and fail, or is configured with an
        undocumented value: azprov refuses such an image."""
        return self.outcome in (PROVISIONS, WAITS_FOR_CLOUD_INIT, UNDOCUMENTED)


def parse_conf(text: str) -> Dict[str, str]:
    """``/etc/waagent.conf`` as WALinuxAgent's ConfigurationProvider reads it (see above)."""
    values: Dict[str, str] = {}
    for line in text.split("\n"):
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.split("#")[0].strip("\" ").strip()
        if value == "None":
            values.pop(key.strip(), None)
        else:
            values[key.strip()] = value
    return values


def switch(conf: Dict[str, str], key: str, default: bool) -> bool:
    """A y/n setting as WALinuxAgent reads it (anything else: the default)."""
    value = conf.get(key, "").lower()
    return True if value == "y" else False if value == "n" else default


def binary(host: Host) -> Optional[str]:
    return next((path for path in BINARIES if host.exists(path)), None)


def unit_link(host: Host) -> Optional[str]:
    links = [link for unit in UNITS for link in host.glob(f"/etc/systemd/system/*.wants/{unit}")]
    return links[0] if links else None


def conf(host: Host) -> Dict[str, str]:
    return parse_conf(host.read_text(CONF) or "")


def cloud_init_enabled(host: Host) -> bool:
    """What ``systemctl is-enabled cloud-init-local.service`` would say (``enabled``) in this
    image: WALinuxAgent's test in ``auto`` mode.  ``/etc/cloud/cloud-init.disabled`` does not
    change it (the unit stays enabled; cloud-init's generator only skips it at boot)."""
    return bool(host.glob(f"/etc/systemd/system/*.wants/{CLOUD_INIT_LOCAL}"))


def judge(host: Host) -> Verdict:
    found = binary(host)
    if found is None:
        return Verdict(ABSENT)
    link = unit_link(host)
    if link is None:
        return Verdict(NOT_ENABLED, binary=found,
                       why=f"WALinuxAgent is installed ({found}) but its unit is not enabled: it never starts")
    settings = conf(host)
    agent = settings.get(AGENT_KEY)
    where = f"WALinuxAgent is installed ({found}) and enabled ({link})"
    shown = f"{AGENT_KEY}={agent}" if agent is not None else f"{AGENT_KEY} unset (auto)"
    legacy = ("; Provisioning.Enabled is ignored since WALinuxAgent 2.2.45"
              if "Provisioning.Enabled" in settings else "")
    if agent == EXTENSIONS_ONLY:
        return Verdict(EXTENSIONS, agent, found, link, f"{where} for VM extensions only ({shown})")
    if agent == "cloud-init" or (agent in (None, "auto") and cloud_init_enabled(host)):
        because = "" if agent == "cloud-init" else f", {CLOUD_INIT_LOCAL} is enabled"
        return Verdict(WAITS_FOR_CLOUD_INIT, agent, found, link,
                       f"{where} with {shown}{because}{legacy}: it waits up to {CLOUD_INIT_WAIT} s for "
                       "cloud-init to copy ovf-env.xml to /var/lib/waagent, then reports the VM as "
                       "ProvisioningFailed")
    if agent in (None, "auto", "waagent"):
        return Verdict(PROVISIONS, agent, found, link,
                       f"{where} with {shown}{legacy}: it provisions this VM itself")
    return Verdict(UNDOCUMENTED, agent, found, link,
                   f"{where} with {shown}, not one of WALinuxAgent's documented values "
                   "(auto, waagent, cloud-init, disabled)")


def manages_firewall(host: Host) -> bool:
    """WALinuxAgent kept for extensions with ``OS.EnableFirewall=y`` sets its own rule for the
    WireServer (root only, DNS allowed): azprov then leaves the rule to it."""
    verdict = judge(host)
    return verdict.extensions_only and switch(conf(host), FIREWALL_KEY, False)


# --- per-VM state (deprovision, check) --------------------------------------------------------

LIB_DIR = "/var/lib/waagent"
LOGS = ("/var/log/waagent.log", "/var/log/waagent.log.*", "/var/log/azure")
# Secrets and markers of the VM WALinuxAgent ran on, by name for check (the rest of LIB_DIR is
# per-VM too: goal state files, history, extension handlers and their status).
SECRETS = ("ovf-env.xml", "Certificates.pem", "Certificates.p7m", "Certificates.xml",
           "TransportPrivate.pem", "TransportCert.pem", "*.prv", "*.crt", "CustomData",
           "Protected*")
MARKERS = ("provisioned", "partition", "published_hostname", "waagent_status.json", "GoalState.*.xml",
           "ExtensionsConfig.*.xml", "SharedConfig.xml", "HostingEnvironmentConfig.xml", "history",
           "events", "waagent.pid")


def state_entries(host: Host) -> List[str]:
    """Every entry of /var/lib/waagent (WALinuxAgent keeps nothing there but per-VM state)."""
    return host.glob(f"{LIB_DIR}/*") + host.glob(f"{LIB_DIR}/.*")


def kind(name: str) -> str:
    """``secret``, ``marker``, ``agent`` (an auto-updated WALinuxAgent), ``extension``
    (``Publisher.Type-version``) or ``state`` for an entry of /var/lib/waagent."""
    if any(fnmatch.fnmatch(name, pattern) for pattern in SECRETS):
        return "secret"
    if any(fnmatch.fnmatch(name, pattern) for pattern in MARKERS):
        return "marker"
    if name.startswith("WALinuxAgent-"):
        return "agent"
    base, dash, version = name.rpartition("-")
    return "extension" if dash and "." in base and version[:1].isdigit() else "state"
