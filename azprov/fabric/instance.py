"""The IMDS instance document the emulator serves: the default document of a Debian VM, the
scenario's overrides (deep-merged ``compute``/``extended``, a whole ``document``, ``remove``d
paths), and the api-versions a current host knows.

It imports nothing of the emulator: ``scenario.py`` uses it to check ``imds.remove`` paths when a
scenario is loaded, the IMDS endpoint to answer.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from azprov.errors import ScenarioError

DEFAULT_VM_ID = "8b1e4c3d-52a7-4f6e-9c80-d3a2b7e615f4"
DEFAULT_VM_NAME = "azprov-demo-vm"  # the resource name (compute.name): not the hostname
DEFAULT_COMPUTER_NAME = "azprov-demo"  # the hostname (compute.osProfile.computerName)
DEFAULT_ADMIN_USERNAME = "azureuser"
SUBSCRIPTION_ID = "3f9a1c72-6d4e-4b8a-9e15-c2d7a0b4e863"
RESOURCE_GROUP = "azprov-rg"
# A real ed25519 public key (its private half was discarded when it was generated).
DEFAULT_PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDSi/X+2K9K0naVa3RLHjpeUGQvbDYDviCgQOvvubHr7 "
    "azureuser@azprov-demo"
)
# IMDS api-versions a current host knows; a scenario can narrow them (an older host).
KNOWN_API_VERSIONS = (
    "2017-03-01", "2017-04-02", "2017-08-01", "2017-10-01", "2017-12-01", "2018-02-01",
    "2018-04-02", "2018-10-01", "2019-02-01", "2019-03-11", "2019-04-30", "2019-06-01",
    "2019-06-04", "2019-08-01", "2019-08-15", "2019-11-01", "2020-06-01", "2020-07-15",
    "2020-09-01", "2020-10-01", "2020-12-01", "2021-01-01", "2021-02-01", "2021-03-01",
    "2021-05-01", "2021-08-01", "2021-10-01", "2021-11-01", "2021-11-15", "2021-12-13",
    "2022-02-01", "2022-03-01", "2022-07-01", "2022-08-01", "2022-11-01", "2023-07-01",
)
EXTENDED_SINCE = "2021-08-01"  # the emulator serves "extended" for extended=true from this version

PublicKeys = Optional[Tuple[Tuple[str, Optional[str]], ...]]  # (keyData, path or None); None: the default key


@dataclass(frozen=True)
class ImdsSettings:
    api_versions: Optional[Tuple[str, ...]] = None  # None: the emulator's list of real versions
    compute: Dict[str, Any] = field(default_factory=dict)  # deep-merged into the document
    extended: Dict[str, Any] = field(default_factory=dict)  # deep-merged into "extended"
    document: Optional[Dict[str, Any]] = None  # replaces the whole document
    raw_body: Optional[bytes] = None  # served as-is
    remove: Tuple[str, ...] = ()  # dotted paths deleted from the document


def _default_document(vm_id: Optional[str], vm_name: Optional[str], computer_name: Optional[str],
                      admin_username: Optional[str], public_keys: PublicKeys,
                      password_authentication_disabled: bool, user_data: Optional[str]) -> Dict[str, Any]:
    vm_name = vm_name or DEFAULT_VM_NAME
    admin = admin_username or DEFAULT_ADMIN_USERNAME
    default_path = f"/home/{admin}/.ssh/authorized_keys"
    if public_keys is None:
        keys: List[Dict[str, str]] = [{"keyData": DEFAULT_PUBLIC_KEY, "path": default_path}]
    else:
        keys = [{"keyData": data, "path": default_path if path is None else path}
                for data, path in public_keys]
    resource_id = (f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}"
                   f"/providers/Microsoft.Compute/virtualMachines/{vm_name}")
    return {
        "compute": {
            "azEnvironment": "AzurePublicCloud",
            "additionalCapabilities": {"hibernationEnabled": "false"},
            "customData": "",
            "evictionPolicy": "",
            "isHostCompatibilityLayerVm": "false",
            "licenseType": "",
            "location": "westeurope",
            "name": vm_name,
            "offer": "debian-12",
            "osProfile": {
                "adminUsername": admin,
                "computerName": computer_name or DEFAULT_COMPUTER_NAME,
                "disablePasswordAuthentication": str(password_authentication_disabled).lower(),
            },
            "osType": "Linux",
            "placementGroupId": "",
            "plan": {"name": "", "product": "", "publisher": ""},
            "platformFaultDomain": "0",
            "platformUpdateDomain": "0",
            "priority": "",
            "provider": "Microsoft.Compute",
            "publicKeys": keys,
            "publisher": "Debian",
            "resourceGroupName": RESOURCE_GROUP,
            "resourceId": resource_id,
            "securityProfile": {"secureBootEnabled": "true", "virtualTpmEnabled": "true",
                                "encryptionAtHost": "false", "securityType": "TrustedLaunch"},
            "sku": "12-gen2",
            "storageProfile": {
                "dataDisks": [],
                "imageReference": {"id": "", "offer": "debian-12", "publisher": "Debian",
                                   "sku": "12-gen2", "version": "latest"},
                "osDisk": {"caching": "ReadWrite", "createOption": "FromImage", "diskSizeGB": "30",
                           "name": f"{vm_name}_OsDisk_1", "osType": "Linux",
                           "managedDisk": {"storageAccountType": "Premium_LRS"}},
            },
            "subscriptionId": SUBSCRIPTION_ID,
            "tags": "",
            "tagsList": [],
            "userData": base64.b64encode(user_data.encode()).decode() if user_data else "",
            "version": "0.20240211.1654",
            "vmId": vm_id or DEFAULT_VM_ID,
            "vmScaleSetName": "",
            "vmSize": "Standard_B2s",
            "zone": "1",
        },
        "network": {
            "interface": [{
                "ipv4": {
                    "ipAddress": [{"privateIpAddress": "10.0.0.4", "publicIpAddress": ""}],
                    "subnet": [{"address": "10.0.0.0", "prefix": "24"}],
                },
                "ipv6": {"ipAddress": []},
                "macAddress": "000D3A2B4C6E",
            }],
        },
    }


def _merge(target: Dict[str, Any], overlay: Dict[str, Any]) -> None:
    """Objects merge key by key, recursively; anything else (lists too) replaces."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _remove(document: Dict[str, Any], path: str) -> None:
    parts = path.split(".")
    node: Any = document
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if isinstance(node, dict) and part in node:
            if last:
                del node[part]
                return
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            if last:
                del node[int(part)]
                return
            node = node[int(part)]
        else:
            raise ScenarioError(f"scenario: imds.remove: {path!r} is not in the document "
                                f"(no {'.'.join(parts[: index + 1])!r})")


def instance_document(settings: ImdsSettings, extended: bool, *, vm_id: Optional[str] = None,
                      vm_name: Optional[str] = None, computer_name: Optional[str] = None,
                      admin_username: Optional[str] = None, public_keys: PublicKeys = None,
                      password_authentication_disabled: bool = True, user_data: Optional[str] = None,
                      has_custom_data: bool = False) -> Dict[str, Any]:
    """The instance document for a request, with or without the ``extended`` section; None
    identity values take the emulator's defaults."""
    if settings.document is not None:
        document = copy.deepcopy(settings.document)
    else:
        document = _default_document(vm_id, vm_name, computer_name, admin_username, public_keys,
                                     password_authentication_disabled, user_data)
        _merge(document["compute"], settings.compute)
        if extended:
            document["extended"] = {"compute": {"ppsType": "None", "hasCustomData": has_custom_data}}
            _merge(document["extended"], settings.extended)
    for path in settings.remove:
        if not extended and path.split(".", 1)[0] == "extended":
            continue
        _remove(document, path)
    return document
