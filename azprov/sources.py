"""Which source wins: IMDS and the provisioning disc combined into the one ``Metadata`` the steps use.

- IMDS, when it answers, is the source of the hostname, the admin user, the SSH keys and the
  password policy.  Where the disc says otherwise, the log says so (a warning each) and IMDS wins:
  IMDS reflects the VM model as it is now, the disc what it was when the disc was written.
- The disc is the only source of the password and the custom data (IMDS never carries either).
- When IMDS cannot be reached, the disc's HostName, UserName, keys and
  DisableSshPasswordAuthentication let provisioning go on (as cloud-init does); the VM id then
  comes from DMI.  When the disc is :func:`complete`, IMDS gets only ``[imds] disc_grace``
  seconds from its first request, not its whole deadline (:func:`choose`): a VM whose IMDS
  cannot be reached provisions in seconds.
- A pool VM is refused whichever source says so (PreprovisionedVm on the disc, ppsType in IMDS).
- A key given only by fingerprint (its material is in the goal state's certificates) is not
  supported: a warning; whether that leaves a way to log in is the flow's check.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

from azprov.errors import FabricUnreachable, IncompleteDisc
from azprov.imds import Metadata, OsProfile, PublicKey
from azprov.ovf import OvfEnv

log = logging.getLogger(__name__)



def _warn_fingerprint_keys(disc: OvfEnv) -> None:
    for key in disc.fingerprint_only_keys:
        log.warning("the provisioning disc has an SSH key given only by fingerprint %s: not "
                    "supported (its material is in the goal state's certificates); ignored",
                    (key.fingerprint or "?")[:64])


def disc_keys(disc: OvfEnv):
    return tuple(PublicKey(key.value, key.path or "") for key in disc.keys if key.value)


def _password_auth_disabled(disc: OvfEnv) -> bool:
    if disc.disable_ssh_password_auth is not None:
        return disc.disable_ssh_password_auth
    return disc.password is None  # not said: password login if, and only if, there is a password


def complete(disc: OvfEnv) -> bool:
    """Whether the disc alone can provision a VM nobody is locked out of: a host name, a user,
    and an SSH key or a password (then IMDS gets only ``[imds] disc_grace`` to answer)."""
    return bool(disc.hostname and disc.username and (disc_keys(disc) or disc.password is not None))


def from_disc(disc: OvfEnv, vm_id: str) -> Metadata:
    """Metadata from the disc alone (IMDS did not answer)."""
    missing = [name for name, value in (("HostName", disc.hostname), ("UserName", disc.username))
               if not value]
    if missing:
        raise IncompleteDisc(f"IMDS did not answer and the provisioning disc has no "
                             f"{' or '.join(missing)}: nothing to provision from")
    _warn_fingerprint_keys(disc)
    profile = OsProfile(disc.hostname, disc.username, _password_auth_disabled(disc))
    return Metadata(vm_id=vm_id, name="", os_profile=profile, public_keys=disc_keys(disc),
                    pps_type=_pps_type(disc), api_version="ovf-env.xml",
                    password=disc.password, custom_data=disc.custom_data)


def _pps_type(disc: OvfEnv) -> Optional[str]:
    if not disc.preprovisioned_vm:
        return None
    return disc.preprovisioned_vm_type or "Running"


def _disagreements(imds: Metadata, disc: OvfEnv) -> None:
    profile = imds.os_profile
    if profile is None:
        return
    pairs = (
        ("hostname", profile.computer_name, disc.hostname),
        ("admin user", profile.admin_username, disc.username),
        ("disablePasswordAuthentication", profile.disable_password_authentication,
         disc.disable_ssh_password_auth),
    )
    for what, from_imds, from_disc_value in pairs:
        if from_disc_value is not None and from_disc_value != from_imds:
            log.warning("IMDS and the provisioning disc disagree on the %s (%r and %r): "
                        "using IMDS's", what, from_imds, from_disc_value)
    imds_keys = {" ".join(key.key_data.split()[:2]) for key in imds.public_keys}
    disc_only = [key for key in disc_keys(disc) if " ".join(key.key_data.split()[:2]) not in imds_keys]
    if disc_only:
        log.warning("the provisioning disc has %d SSH key(s) IMDS does not list: using IMDS's "
                    "keys only", len(disc_only))


def combine(imds: Metadata, disc: Optional[OvfEnv]) -> Metadata:
    """IMDS's metadata with the disc's password and custom data (see the module's rules)."""
    if disc is None:
        return imds
    _warn_fingerprint_keys(disc)
    _disagreements(imds, disc)
    pps_type = imds.pps_type if imds.is_pool_vm else _pps_type(disc) or imds.pps_type
    return dataclasses.replace(imds, password=disc.password, custom_data=disc.custom_data,
                               pps_type=pps_type)


def choose(imds, disc: Optional[OvfEnv], dmi_id: Optional[str], grace: float) -> Metadata:
    """The metadata of this VM: IMDS's with the disc's (:func:`combine`), or the disc alone when
    IMDS does not answer and DMI gives the VM id.  ``imds`` is the IMDS fetch under way (an
    :class:`azprov.background.Background`); when the disc is :func:`complete`, it gets ``grace``
    seconds from its start, then is given up."""
    if disc is not None and dmi_id is not None and complete(disc):
        if not imds.done():
            log.info("waiting up to %g s for IMDS ([imds] disc_grace); the provisioning disc "
                     "can provision this VM without it", grace)
        if not imds.wait(grace):
            imds.give_up()  # no further IMDS attempts in the background
            log.warning("IMDS was not reached within %g s ([imds] disc_grace): provisioning "
                        "from the provisioning disc alone (host name, user, keys and password "
                        "from ovf-env.xml; VM id from DMI; no IMDS user data)", grace)
            return from_disc(disc, dmi_id)
    try:
        metadata = imds.result()
    except FabricUnreachable as exc:
        if disc is None or dmi_id is None:
            raise
        log.warning("IMDS did not answer (%s): provisioning from the provisioning disc alone", exc)
        return from_disc(disc, dmi_id)
    return combine(metadata, disc)
