"""``ovf-env.xml``, the provisioning disc's document: parsed into a frozen ``OvfEnv``.

Parsed with defusedxml (via :mod:`azprov.xmlparse`, size capped) and matched **by namespace URI,
never by prefix**: Azure writes a default namespace plus ``wa:``, other writers other prefixes.
The root is ``Environment`` in the OVF environment namespace; everything azprov reads is in the
Windows Azure namespace under ``ProvisioningSection/LinuxProvisioningConfigurationSet`` and
``PlatformSettingsSection/PlatformSettings``.  The password and custom data are kept out of
``repr`` so they cannot reach a log by accident; :func:`redacted` gives a copy safe to keep.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass, field
from typing import Optional, Tuple

from azprov.errors import InvalidOvfEnv, ProtocolError
from azprov.xmlparse import parse_untrusted_xml

log = logging.getLogger(__name__)


OVF_NS = "http://schemas.dmtf.org/ovf/environment/1"
WA_NS = "http://schemas.microsoft.com/windowsazure"
MAX_BYTES = 1024 * 1024
MAX_KEYS = 64
MAX_FIELD = 64 * 1024  # one text field (a key, a name); custom data has its own cap
MAX_CUSTOM_DATA = 256 * 1024  # decoded (Azure's limit is 64 KiB of base64)
REDACTED = "*** redacted by azprov ***"
_WHITESPACE = re.compile(r"\s+")


def _wa(name: str) -> str:
    return f"{{{WA_NS}}}{name}"


@dataclass(frozen=True)
class OvfKey:
    """One ``SSH/PublicKeys/PublicKey``: the key ``value`` (absent when only a fingerprint is
    given: its material is in the goal state's certificates, which azprov does not fetch)."""

    path: Optional[str]
    value: Optional[str]
    fingerprint: Optional[str]


@dataclass(frozen=True)
class OvfEnv:
    """What azprov uses of the provisioning disc's ``ovf-env.xml`` (None: not given)."""

    hostname: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    disable_ssh_password_auth: Optional[bool] = None
    keys: Tuple[OvfKey, ...] = ()
    custom_data: Optional[bytes] = field(default=None, repr=False)
    preprovisioned_vm: bool = False
    preprovisioned_vm_type: Optional[str] = None
    provision_guest_proxy_agent: Optional[bool] = None
    # PlatformSettings/ProvisionGuestAgent: whether the VM was created asking for a guest agent
    # (osProfile.linuxConfiguration.provisionVMAgent; az vm create's default is true)
    provision_guest_agent: Optional[bool] = None

    @property
    def fingerprint_only_keys(self) -> Tuple[OvfKey, ...]:
        return tuple(key for key in self.keys if not key.value)

    def summary(self) -> dict:
        """What the disc carries, password redacted (for ``azprov metadata`` and the logs)."""
        return {
            "hostname": self.hostname, "username": self.username,
            "password": None if self.password is None else "(set, redacted)",
            "disable_ssh_password_authentication": self.disable_ssh_password_auth,
            "ssh_keys": [{"path": k.path, "fingerprint": k.fingerprint,
                          "value": (k.value[:40] + "...") if k.value and len(k.value) > 40 else k.value}
                         for k in self.keys],
            "custom_data_bytes": None if self.custom_data is None else len(self.custom_data),
            "preprovisioned_vm": self.preprovisioned_vm,
            "preprovisioned_vm_type": self.preprovisioned_vm_type,
            "provision_guest_proxy_agent": self.provision_guest_proxy_agent,
            "provision_guest_agent": self.provision_guest_agent,
        }


def _text(parent, name: str, limit: int = MAX_FIELD) -> Optional[str]:
    if parent is None:
        return None
    child = parent.find(_wa(name))
    if child is None or child.text is None:
        return None
    if len(child.text) > limit:
        raise ProtocolError(f"ovf-env.xml {name} is over {limit} characters")
    return child.text


def _bool(parent, name: str) -> Optional[bool]:
    text = _text(parent, name)
    if text is None or not text.strip():
        return None
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ProtocolError(f"ovf-env.xml {name} is {value[:20]!r}, not true or false")
    return value == "true"


def _advisory_bool(parent, name: str) -> Optional[bool]:
    """A setting azprov only reports on: a bad value is a warning and None, never a failure."""
    try:
        return _bool(parent, name)
    except ProtocolError as exc:
        log.warning("%s; ignoring it", exc)
        return None


def _custom_data(text: Optional[str]) -> Optional[bytes]:
    if text is None:
        return None
    compact = _WHITESPACE.sub("", text)
    if len(compact) > MAX_CUSTOM_DATA * 4 // 3 + 4:
        raise ProtocolError(f"ovf-env.xml CustomData is over {MAX_CUSTOM_DATA} bytes")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("ovf-env.xml CustomData is not base64") from None


def _keys(config) -> Tuple[OvfKey, ...]:
    if config is None:
        return ()
    keys = []
    for public_keys in config.findall(f"{_wa('SSH')}/{_wa('PublicKeys')}"):
        for element in public_keys.findall(_wa("PublicKey")):
            if len(keys) >= MAX_KEYS:
                raise ProtocolError(f"ovf-env.xml has more than {MAX_KEYS} SSH keys")
            value = (_text(element, "Value") or "").strip() or None
            fingerprint = (_text(element, "Fingerprint") or "").strip() or None
            keys.append(OvfKey((_text(element, "Path") or "").strip() or None, value, fingerprint))
    return tuple(keys)


def parse_ovf_env(body: bytes) -> OvfEnv:
    """The OvfEnv of ``body``; InvalidOvfEnv (a ProtocolError) if it is not a usable ovf-env.xml."""
    try:
        return _parse(body)
    except InvalidOvfEnv:
        raise
    except ProtocolError as exc:
        raise InvalidOvfEnv(str(exc)) from None


def _parse(body: bytes) -> OvfEnv:
    root = parse_untrusted_xml(body, "ovf-env.xml", MAX_BYTES, f"{{{OVF_NS}}}Environment")
    config = root.find(f"{_wa('ProvisioningSection')}/{_wa('LinuxProvisioningConfigurationSet')}")
    platform = root.find(f"{_wa('PlatformSettingsSection')}/{_wa('PlatformSettings')}")
    if config is None:
        raise ProtocolError("ovf-env.xml has no LinuxProvisioningConfigurationSet")
    kind = (_text(config, "ConfigurationSetType") or "").strip()
    if kind and kind != "LinuxProvisioningConfiguration":
        raise ProtocolError(f"ovf-env.xml configuration set is {kind[:64]!r}, not Linux")

    def stripped(name: str) -> Optional[str]:
        value = _text(config, name)
        return value.strip() or None if value is not None else None

    return OvfEnv(
        hostname=stripped("HostName"),
        username=stripped("UserName"),
        password=_text(config, "UserPassword") or None,
        disable_ssh_password_auth=_bool(config, "DisableSshPasswordAuthentication"),
        keys=_keys(config),
        custom_data=_custom_data(_text(config, "CustomData", MAX_CUSTOM_DATA * 2)),
        preprovisioned_vm=bool(_bool(platform, "PreprovisionedVm")),
        preprovisioned_vm_type=(_text(platform, "PreprovisionedVMType") or "").strip() or None,
        provision_guest_proxy_agent=_bool(platform, "ProvisionGuestProxyAgent"),
        provision_guest_agent=_advisory_bool(platform, "ProvisionGuestAgent"),
    )


def redacted(body: bytes) -> bytes:
    """``body`` (an ovf-env.xml that :func:`parse_ovf_env` accepted) with every UserPassword's
    text replaced, serialised again by ElementTree: the copy azprov keeps for debugging."""
    from xml.etree import ElementTree

    root = parse_untrusted_xml(body, "ovf-env.xml", MAX_BYTES, f"{{{OVF_NS}}}Environment")
    for element in root.iter(_wa("UserPassword")):
        element.text = REDACTED
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
