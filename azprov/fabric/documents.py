"""The documents the emulated fabric serves: goal state XML, the IMDS instance document, errors.

Shaped like the real ones (elements and fields a guest agent may look at), with fixed,
random-looking identifiers so runs are reproducible.  Every scenario value is escaped.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any, Dict, List, Optional
from urllib.parse import quote
from xml.sax.saxutils import escape

from azprov.errors import ScenarioError
from azprov.fabric.scenario import Scenario
from azprov.goalstate import GoalState

PROTOCOL_VERSION = "2012-11-30"
DEFAULT_CONTAINER_ID = "5c2f8c8e-3b9a-4e51-9d47-0f6e2a81b7d3"
DEFAULT_INSTANCE_UUID = "e1d4a6b2-7f38-4c09-a5be-93c7d20f4e61"
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


def initial_goal_state(scenario: Scenario) -> GoalState:
    vm_name = scenario.vm_name or DEFAULT_VM_NAME
    return GoalState(
        scenario.incarnation,
        scenario.container_id or DEFAULT_CONTAINER_ID,
        scenario.instance_id or f"{DEFAULT_INSTANCE_UUID}._{vm_name}",
    )


def _config_url(base_url: str, goal: GoalState, kind: str) -> str:
    return (
        f"{base_url}/machine/{quote(goal.container_id, safe='')}/{quote(goal.instance_id, safe='')}"
        f"?comp=config&type={kind}&incarnation={goal.incarnation}"
    )


def goal_state_xml(goal: GoalState, base_url: str, role_instance: bool = True) -> bytes:
    """The goal state document; without ``role_instance`` the RoleInstanceList is empty, as it
    is transiently at boot."""
    e = escape
    role = ""
    if role_instance:
        urls = {kind: e(_config_url(base_url, goal, kind)) for kind in (
            "hostingEnvironmentConfig", "sharedConfig", "extensionsConfig", "fullConfig")}
        config_name = e(f"{goal.instance_id.split('.', 1)[0]}.0.{goal.instance_id}.{goal.incarnation}.xml")
        role = f"""
      <RoleInstance>
        <InstanceId>{e(goal.instance_id)}</InstanceId>
        <State>Started</State>
        <Configuration>
          <HostingEnvironmentConfig>{urls['hostingEnvironmentConfig']}</HostingEnvironmentConfig>
          <SharedConfig>{urls['sharedConfig']}</SharedConfig>
          <ExtensionsConfig>{urls['extensionsConfig']}</ExtensionsConfig>
          <FullConfig>{urls['fullConfig']}</FullConfig>
          <ConfigName>{config_name}</ConfigName>
        </Configuration>
      </RoleInstance>
    """
    text = f"""<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="goalstate10.xsd">
  <Version>{PROTOCOL_VERSION}</Version>
  <Incarnation>{goal.incarnation}</Incarnation>
  <Machine>
    <ExpectedState>Started</ExpectedState>
    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>
    <LBProbePorts>
      <Port>16001</Port>
    </LBProbePorts>
    <ExpectHealthReport>FALSE</ExpectHealthReport>
  </Machine>
  <Container>
    <ContainerId>{e(goal.container_id)}</ContainerId>
    <RoleInstanceList>{role}</RoleInstanceList>
  </Container>
</GoalState>
"""
    return text.encode("utf-8")


def config_xml(goal: GoalState, kind: str) -> Optional[bytes]:
    """A minimal document for the Configuration URLs of the goal state (None: unknown type)."""
    e = escape
    if kind == "extensionsConfig":
        text = (f'<Extensions version="1.0.0.0" goalStateIncarnation="{goal.incarnation}">'
                "<GuestAgentExtension/><Plugins/><PluginSettings/></Extensions>")
    elif kind == "hostingEnvironmentConfig":
        text = ('<HostingEnvironmentConfig version="1.0.0.0" goalStateIncarnation="'
                f'{goal.incarnation}"><Deployment name="{e(goal.container_id)}"/>'
                "</HostingEnvironmentConfig>")
    elif kind == "sharedConfig":
        text = (f'<SharedConfig version="1.0.0.0" goalStateIncarnation="{goal.incarnation}">'
                f'<Instances><Instance id="{e(goal.instance_id)}"/></Instances></SharedConfig>')
    elif kind == "fullConfig":
        text = (f'<RDConfig version="1.0.0.0" goalStateIncarnation="{goal.incarnation}">'
                f'<Instance id="{e(goal.instance_id)}"/></RDConfig>')
    else:
        return None
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + text + "\n").encode("utf-8")


def versions_xml() -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<Versions>\n  <Preferred>\n'
        f"    <Version>{PROTOCOL_VERSION}</Version>\n  </Preferred>\n  <Supported>\n"
        f"    <Version>{PROTOCOL_VERSION}</Version>\n    <Version>2012-09-15</Version>\n"
        "    <Version>2012-03-01</Version>\n  </Supported>\n</Versions>\n"
    ).encode("utf-8")


def error_xml(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>\n"
    ).encode("utf-8")


def error_json(message: str, **extra: Any) -> bytes:
    return json.dumps({"error": message, **extra}).encode("utf-8")


def _default_document(scenario: Scenario) -> Dict[str, Any]:
    vm_name = scenario.vm_name or DEFAULT_VM_NAME
    admin = scenario.admin_username or DEFAULT_ADMIN_USERNAME
    default_path = f"/home/{admin}/.ssh/authorized_keys"
    if scenario.public_keys is None:
        keys: List[Dict[str, str]] = [{"keyData": DEFAULT_PUBLIC_KEY, "path": default_path}]
    else:
        keys = [{"keyData": data, "path": default_path if path is None else path}
                for data, path in scenario.public_keys]
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
                "computerName": scenario.computer_name or DEFAULT_COMPUTER_NAME,
                "disablePasswordAuthentication": str(scenario.password_authentication_disabled).lower(),
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
            "userData": base64.b64encode(scenario.user_data.encode()).decode() if scenario.user_data else "",
            "version": "0.20240211.1654",
            "vmId": scenario.vm_id or DEFAULT_VM_ID,
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


def imds_document(scenario: Scenario, extended: bool) -> Dict[str, Any]:
    """The instance document for a request, with or without the ``extended`` section."""
    settings = scenario.imds
    if settings.document is not None:
        document = copy.deepcopy(settings.document)
    else:
        document = _default_document(scenario)
        _merge(document["compute"], settings.compute)
        if extended:
            document["extended"] = {"compute": {"ppsType": "None",
                                                "hasCustomData": scenario.custom_data is not None}}
            _merge(document["extended"], settings.extended)
    for path in settings.remove:
        if not extended and path.split(".", 1)[0] == "extended":
            continue
        _remove(document, path)
    return document


def imds_body(scenario: Scenario, extended: bool) -> bytes:
    if scenario.imds.raw_body is not None:
        return scenario.imds.raw_body
    return json.dumps(imds_document(scenario, extended)).encode("utf-8")
