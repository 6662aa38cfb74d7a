"""The documents the emulated WireServer serves (goal state, configuration, versions) and the
error bodies of both endpoints; the IMDS instance document is in ``instance.py``.

Shaped like the real ones (elements and fields a guest agent may look at), with fixed,
random-looking identifiers so runs are reproducible.  Every scenario value is escaped.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Tuple
from urllib.parse import quote
from xml.sax.saxutils import escape

from azprov.fabric.instance import DEFAULT_VM_NAME
from azprov.fabric.scenario import Scenario
from azprov.goalstate import GoalState

PROTOCOL_VERSION = "2012-11-30"
DEFAULT_CONTAINER_ID = "5c2f8c8e-3b9a-4e51-9d47-0f6e2a81b7d3"
DEFAULT_INSTANCE_UUID = "e1d4a6b2-7f38-4c09-a5be-93c7d20f4e61"


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


def extensions_xml(goal: GoalState, extensions: Tuple[Tuple[str, str], ...]) -> str:
    """The ExtensionsConfig document as WALinuxAgent reads it: ``Plugins/Plugin`` (name,
    version, location of the handler manifest, state...) and each one's ``PluginSettings``."""
    e = escape
    plugins = "".join(
        f'<Plugin name="{e(name)}" version="{e(version)}" location="https://umsa.blob.core.windows.net/'
        f'{e(name)}_manifest.xml" state="enabled" autoUpgrade="false" runAsStartupTask="false" '
        f'isJson="true" useExactVersion="true" />' for name, version in extensions)
    settings = "".join(
        f'<Plugin name="{e(name)}" version="{e(version)}"><RuntimeSettings seqNo="0">'
        '{"runtimeSettings":[{"handlerSettings":{"publicSettings":{}}}]}</RuntimeSettings></Plugin>'
        for name, version in extensions)
    return (f'<Extensions version="1.0.0.0" goalStateIncarnation="{goal.incarnation}">'
            "<GuestAgentExtension><GAFamilies><GAFamily><Name>Prod</Name><Uris><Uri>"
            "https://umsa.blob.core.windows.net/Microsoft.OSTCLinuxAgent_Prod_manifest.xml</Uri></Uris>"
            f"</GAFamily></GAFamilies></GuestAgentExtension><Plugins>{plugins}</Plugins>"
            f"<PluginSettings>{settings}</PluginSettings></Extensions>")


def config_xml(goal: GoalState, kind: str, extensions: Tuple[Tuple[str, str], ...] = ()) -> Optional[bytes]:
    """A minimal document for the Configuration URLs of the goal state (None: unknown type)."""
    e = escape
    if kind == "extensionsConfig":
        text = extensions_xml(goal, extensions)
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
