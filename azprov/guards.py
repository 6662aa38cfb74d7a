"""Refusals: VMs azprov must not provision as normal, each with a clear reason.

- Another provisioner would race it: WALinuxAgent (installed, its unit enabled, and
  ``Provisioning.Agent`` in ``/etc/waagent.conf`` anything but ``disabled``: it provisions, or
  waits for cloud-init and fails the VM later; :mod:`azprov.waagent` judges it as WALinuxAgent
  does; with ``disabled`` it only runs VM extensions and is welcome) or cloud-init with the Azure datasource (installed, not
  disabled by ``/etc/cloud/cloud-init.disabled``, ``datasource_list`` including Azure, or unset,
  which means all).  ``refuse_other_provisioners = false`` makes this a warning.
- A pre-provisioned pool VM (``ppsType`` other than None): it needs the reprovisioning flow.
- No osProfile: a VM from a specialized disk has nothing for azprov to apply.
- No way to log in: no SSH key and no password (a password VM whose disc is missing, a key-only
  VM without a key) fails loudly instead of reporting Ready for a VM nobody can enter.
- Custom data IMDS says exists (``hasCustomData``) but no disc carried: a failure by default,
  a warning with ``[custom_data] on_missing = "warn"``.
"""

from __future__ import annotations

import logging
import re
from typing import List, Optional

from azprov import waagent
from azprov.errors import CustomDataMissing, NoOsProfile, NoWayToLogIn, OtherProvisioner, PoolVm
from azprov.host import Host

log = logging.getLogger(__name__)

CLOUD_INIT_BINARIES = ("/usr/bin/cloud-init", "/usr/local/bin/cloud-init")
CLOUD_INIT_DISABLED = "/etc/cloud/cloud-init.disabled"
CLOUD_CFG = "/etc/cloud/cloud.cfg"
CLOUD_CFG_DIR = "/etc/cloud/cloud.cfg.d"


def check_login(metadata, settings) -> None:
    """Fail unless the admin user will have an SSH key or a password."""
    if not settings.create_user:
        return
    keys = metadata.public_keys if settings.install_ssh_keys else ()
    if keys or metadata.password is not None:
        return
    if not metadata.os_profile.disable_password_authentication:
        raise NoWayToLogIn(
            "password login was requested (disablePasswordAuthentication is false) but no "
            "password was found (no provisioning disc, or no UserPassword on it) and there is no "
            "SSH key: nobody could log in to this VM", admin_username=metadata.os_profile.admin_username)
    raise NoWayToLogIn("SSH key login only (disablePasswordAuthentication is true) but there is no "
                       "SSH key" + ("" if settings.install_ssh_keys else
                                    " (provisioning.install_ssh_keys = false)")
                       + ": nobody could log in to this VM",
                       admin_username=metadata.os_profile.admin_username)


def password_not_set(metadata, settings, disc, disc_read: bool = True) -> Optional[str]:
    """What to tell when the deployment asked for password login (disablePasswordAuthentication
    false) but no password can be set (no disc, or none on it): None when there is nothing to
    say.  Provisioning goes on (the SSH keys work; without keys ``check_login`` has refused)."""
    if not settings.create_user or metadata.os_profile.disable_password_authentication \
            or metadata.password is not None:
        return None
    why = ("the provisioning disc was not read ([media] read = false)" if not disc_read
           else "no provisioning disc was found" if disc is None
           else "the provisioning disc carries no UserPassword")
    name = metadata.os_profile.admin_username
    return (f"password login was requested (disablePasswordAuthentication is false) but no password "
            f"was set for {name}: {why}; {name} logs in with the SSH key only (password locked). "
            f"To use a password, log in with the key and run `sudo passwd {name}`")


def check_custom_data(metadata, on_missing: str) -> None:
    if not metadata.has_custom_data or metadata.custom_data is not None:
        return
    message = "IMDS says this VM has custom data, but no provisioning disc carried it"
    if on_missing == "warn":
        log.warning("%s; going ahead ([custom_data] on_missing = \"warn\")", message)
        return
    raise CustomDataMissing(f"{message}: failing rather than silently dropping it (set "
                            '[custom_data] on_missing = "warn" to go ahead without it)')


def check_metadata(metadata) -> None:
    if metadata.is_pool_vm:
        raise PoolVm(f"this VM belongs to a pre-provisioned pool (ppsType {metadata.pps_type!r}); "
                     "azprov does not implement the reprovisioning flow", pps_type=metadata.pps_type)
    if metadata.os_profile is None:
        raise NoOsProfile("IMDS has no osProfile for this VM (created from a specialized disk?): "
                          "nothing to provision")


def waagent_extensions_only(host: Host) -> bool:
    """WALinuxAgent runs for VM extensions only (``Provisioning.Agent=disabled``, its unit
    enabled): the supported way to keep extensions.  It posts its own Ready as soon as it
    starts, so azprov's unit is ordered before it and sends READY=1 only after azprov's Ready
    was accepted."""
    return waagent.judge(host).extensions_only


def waagent_provisions(host: Host) -> Optional[str]:
    """Why WALinuxAgent would take part in provisioning this VM (provision it, or wait for
    cloud-init and then fail it), or None (see :mod:`azprov.waagent`)."""
    verdict = waagent.judge(host)
    if verdict.problem:
        return verdict.why
    if verdict.why:
        log.info("%s", verdict.why + (": it starts after azprov" if verdict.extensions_only else ""))
    return None


def datasource_list(text: str) -> Optional[List[str]]:
    """The ``datasource_list`` of one cloud.cfg file (flow or block YAML list), or None if unset."""
    match = re.search(r"^datasource_list[ \t]*:[ \t]*(.*)$", text, re.MULTILINE)
    if match is None:
        return None
    rest = match.group(1).split("#", 1)[0].strip()
    if rest.startswith("["):
        body = text[match.start(1):]
        body = body[1:body.index("]")] if "]" in body else body[1:]
        items = body.split(",")
    else:
        items = []
        for line in text[match.end():].splitlines()[1:]:
            item = re.match(r"^\s*-\s*(.*)$", line)
            if item is None:
                if line.strip() and not line.lstrip().startswith("#"):
                    break
                continue
            items.append(item.group(1))
    cleaned = [item.split("#", 1)[0].strip().strip("'\"") for item in items]
    return [item for item in cleaned if item]


def cloud_init_provisions(host: Host) -> Optional[str]:
    """Why cloud-init would provision this VM with its Azure datasource, or None."""
    binary = next((path for path in CLOUD_INIT_BINARIES if host.exists(path)), None)
    if binary is None:
        return None
    if host.exists(CLOUD_INIT_DISABLED):
        log.info("cloud-init is installed but disabled by %s", CLOUD_INIT_DISABLED)
        return None
    if "cloud-init=disabled" in host.probes.kernel_command_line():
        return None
    sources = None
    where = "default: every datasource"
    for path in [CLOUD_CFG] + host.glob(f"{CLOUD_CFG_DIR}/*.cfg"):
        found = datasource_list(host.read_text(path) or "")
        if found is not None:
            sources, where = found, path
    if sources is not None and not any(source.lower() == "azure" for source in sources):
        log.info("cloud-init is installed without the Azure datasource (%s)", where)
        return None
    return f"cloud-init is installed ({binary}) with the Azure datasource ({where})"


def other_provisioners(host: Host) -> List[str]:
    return [why for why in (waagent_provisions(host), cloud_init_provisions(host)) if why]


def check_other_provisioners(host: Host, settings) -> None:
    found = other_provisioners(host)
    if not found:
        return
    if settings.refuse_other_provisioners:
        raise OtherProvisioner(
            "; ".join(found) + ". Two provisioners race on one VM: remove or disable the other "
            "one, or set provisioning.refuse_other_provisioners = false",
            provisioner="walinuxagent" if found[0].startswith("WALinuxAgent") else "cloud-init",
        )
    for why in found:
        log.warning("%s; going ahead (provisioning.refuse_other_provisioners = false)", why)
