"""What the platform asked for: ProvisionGuestAgent on the disc and the goal state's
ExtensionsConfig, said after Ready (log, KVP, status) when no guest agent will act on it."""

from __future__ import annotations

import json
import os

import pytest

from azprov import extensions, kvp
from azprov.errors import ProtocolError
from azprov.goalstate import parse_goal_state
from azprov.host import Host
from azprov.ovf import parse_ovf_env
from support import cli
from support.scratch_root import make_scratch_root

MONITOR = "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent"
SCRIPT = "Microsoft.Azure.Extensions.CustomScript"

# An ExtensionsConfig as the WireServer sends it (shape as WALinuxAgent's own test data):
# GuestAgentExtension, Plugins with attributes, PluginSettings, StatusUploadBlob.
DOCUMENT = (b'<Extensions version="1.0.0.0" goalStateIncarnation="2"><GuestAgentExtension '
            b'xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><GAFamilies><GAFamily><Name>Prod</Name>'
            b'<Uris><Uri>https://example/manifest.xml</Uri></Uris></GAFamily></GAFamilies></GuestAgentExtension>'
            b'<Plugins><Plugin name="Microsoft.Azure.Extensions.CustomScript" version="2.1.10" location="x" '
            b'state="enabled" autoUpgrade="true" isJson="true" />'
            b'<Plugin name="Microsoft.OSTCExtensions.VMAccessForLinux" version="1.5.1" state="uninstall" /></Plugins>'
            b'<PluginSettings><Plugin name="Microsoft.Azure.Extensions.CustomScript" version="2.1.10">'
            b'<RuntimeSettings seqNo="0">{"runtimeSettings":[]}</RuntimeSettings></Plugin></PluginSettings>'
            b'<StatusUploadBlob statusBlobType="BlockBlob">https://x/status?sig=s</StatusUploadBlob></Extensions>')


def test_the_plugins_are_read_as_walinuxagent_reads_them():
    plugins = extensions.parse_extensions_config(DOCUMENT)
    assert [(p.name, p.version, p.state) for p in plugins] == [
        (SCRIPT, "2.1.10", "enabled"), ("Microsoft.OSTCExtensions.VMAccessForLinux", "1.5.1", "uninstall")]


def test_the_emulators_document_has_the_same_shape():
    from azprov.fabric.documents import extensions_xml
    from azprov.goalstate import GoalState

    text = extensions_xml(GoalState(3, "c", "i"), ((MONITOR, "1.33.2"), (SCRIPT, "2.1.10")))
    plugins = extensions.parse_extensions_config(text.encode())
    assert [(p.name, p.version, p.state) for p in plugins] == [(MONITOR, "1.33.2", "enabled"),
                                                               (SCRIPT, "2.1.10", "enabled")]
    assert extensions.parse_extensions_config(extensions_xml(GoalState(3, "c", "i"), ()).encode()) == ()


def test_hostile_documents_are_refused_or_cleaned():
    many = b"<Extensions><Plugins>" + b'<Plugin name="a" version="1"/>' * 300 + b"</Plugins></Extensions>"
    with pytest.raises(ProtocolError, match="more than 256"):
        extensions.parse_extensions_config(many)
    odd = b'<Extensions><Plugins><Plugin name="bad&#10;name" version="1"/><Plugin name="ok"/></Plugins></Extensions>'
    assert [p.name for p in extensions.parse_extensions_config(odd)] == ["ok"]
    with pytest.raises(ProtocolError):
        extensions.parse_extensions_config(b'<!DOCTYPE x [<!ENTITY a "b">]><Extensions>&a;</Extensions>')


def _goal_state(url: str) -> bytes:
    return (f"<GoalState><Incarnation>1</Incarnation><Container><ContainerId>c</ContainerId><RoleInstanceList>"
            f"<RoleInstance><InstanceId>i</InstanceId><Configuration><ExtensionsConfig>{url}</ExtensionsConfig>"
            "</Configuration></RoleInstance></RoleInstanceList></Container></GoalState>").encode()


def test_the_goal_state_carries_the_extensions_config_url():
    url = "http://168.63.129.16:80/machine/c/i?comp=config&amp;type=extensionsConfig&amp;incarnation=1"
    assert parse_goal_state(_goal_state(url)).extensions_config == url.replace("&amp;", "&")
    for bad in ("file:///etc/shadow", "http://x/ y", "javascript:x", ""):
        assert parse_goal_state(_goal_state(bad)).extensions_config is None, bad


def test_provision_guest_agent_is_read_from_the_disc_and_never_fails_it():
    def disc(value: str) -> bytes:
        return ('<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" '
                'xmlns:wa="http://schemas.microsoft.com/windowsazure"><wa:ProvisioningSection>'
                '<LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure">'
                '<ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType><HostName>h</HostName>'
                '<UserName>u</UserName></LinuxProvisioningConfigurationSet></wa:ProvisioningSection>'
                '<wa:PlatformSettingsSection><PlatformSettings xmlns="http://schemas.microsoft.com/windowsazure">'
                f'<ProvisionGuestAgent>{value}</ProvisionGuestAgent></PlatformSettings></wa:PlatformSettingsSection>'
                '</Environment>').encode()

    assert parse_ovf_env(disc("true")).provision_guest_agent is True
    assert parse_ovf_env(disc("false")).provision_guest_agent is False
    assert parse_ovf_env(disc("maybe")).provision_guest_agent is None  # a warning, not a failure


def test_the_advice_names_what_was_asked_and_the_fix(tmp_path):
    host = Host(make_scratch_root(str(tmp_path / "root")))
    plugins = extensions.parse_extensions_config(DOCUMENT)
    advice = extensions.advise(host, True, tuple(p for p in plugins if p.state != "uninstall"))
    assert advice.extensions == (f"{SCRIPT} 2.1.10",)
    assert f"VM extension {SCRIPT} 2.1.10" in advice.message and "ProvisionGuestAgent=true" in advice.message
    assert "Provisioning.Agent=disabled" in advice.message and "--enable-agent false" in advice.message
    only_agent = extensions.advise(host, True, ())
    assert "extensions added to it later will fail" in only_agent.message
    assert extensions.advise(host, False, ()) is None and extensions.advise(host, None, None) is None


def test_walinuxagent_kept_for_extensions_handles_them(tmp_path):
    host = Host(make_scratch_root(str(tmp_path / "root"), waagent=True,
                                  waagent_conf="Provisioning.Agent=disabled\n"))
    assert extensions.advise(host, True, extensions.parse_extensions_config(DOCUMENT)) is None


def test_a_url_away_from_the_wireserver_is_not_followed():
    from azprov.http import Deadline, HttpClient, RetryPolicy
    from azprov.wireserver import WireServerClient

    client = WireServerClient("http://127.0.0.1:9", HttpClient(), RetryPolicy(deadline=1))
    with pytest.raises(ProtocolError, match="points away from the WireServer"):
        client.document("http://203.0.113.9/x", "extensions configuration", 1024, Deadline.after(1))


# --- the real exchange: the emulator asks for extensions, azprov provisions and says so ---------

@pytest.mark.emulator
@cli.requires_root
def test_an_agentless_vm_asked_for_extensions_is_ready_and_says_so(scratch_root, emulator, tmp_path):
    scenario = {"computer_name": "ext-vm", "admin_username": "alice", "provision_guest_agent": True,
                "extensions": [f"{MONITOR}@1.33.2", SCRIPT]}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    made = cli.azprov("fabric", "disc", "--scenario", str(path), "--output", os.path.join(scratch_root, "dev/sr0"))
    assert made.returncode == 0, made.stderr
    fabric = emulator(scenario)
    result = cli.provision(scratch_root, fabric)
    assert result.returncode == 0, result.stderr
    assert [r["state"] for r in fabric.reports] == ["Ready"]
    # Ready first, then the extensions configuration: it never delays Ready
    endpoints = [(r["endpoint"], r.get("path", "")) for r in fabric.requests]
    health = next(i for i, (name, _) in enumerate(endpoints) if name == "health")
    fetched = [i for i, (name, path) in enumerate(endpoints) if name == "config" and "extensionsConfig" in path]
    assert fetched and all(i > health for i in fetched), endpoints
    # the log (journal and console under systemd) names the extensions and the fix
    warning = next(line for line in result.stderr.splitlines() if "no guest agent runs here" in line)
    assert f"{MONITOR} 1.33.2" in warning and f"{SCRIPT} 1.0.0" in warning and "Provisioning.Agent=disabled" in warning
    # the KVP report: still a success, with the warning
    host = Host(scratch_root)
    (report,) = [value for key, value in kvp.read_pool(host) if key == kvp.PROVISIONING_REPORT]
    assert report.startswith("result=success|") and f"{MONITOR} 1.33.2" in report and "warning=" in report
    # azprov status says it
    status = cli.azprov("status", "--root", scratch_root)
    assert f"warning: this VM was created asking for VM extensions {MONITOR} 1.33.2" in status.stdout
    data = json.loads(cli.azprov("status", "--json", "--root", scratch_root).stdout)
    assert len(data["platform_warnings"]) == 1 and SCRIPT in data["platform_warnings"][0]


@pytest.mark.emulator
@cli.requires_root
def test_no_extensions_no_agent_requested_no_warning(scratch_root, emulator):
    fabric = emulator({})
    result = cli.provision(scratch_root, fabric)
    assert result.returncode == 0, result.stderr
    assert "no guest agent runs here" not in result.stderr
    report = dict(kvp.read_pool(Host(scratch_root)))[kvp.PROVISIONING_REPORT]
    assert "warning=" not in report


def test_a_failure_to_read_it_is_a_warning_only(tmp_path, caplog):
    class Broken:
        def document(self, *args, **kwargs):
            raise ProtocolError("the WireServer garbled it")

    class Goal:
        extensions_config = "http://168.63.129.16/x"

    host = Host(make_scratch_root(str(tmp_path / "root")))
    told = []
    assert extensions.after_ready(host, Broken(), Goal(), None, told.append) == ()
    assert told == [] and "could not read the goal state's extensions configuration" in caplog.text

    class Exploding:
        def document(self, *args, **kwargs):
            raise RuntimeError("bug")

    assert extensions.after_ready(host, Exploding(), Goal(), None, told.append) == ()
    assert "could not check what the platform asked for: RuntimeError" in caplog.text
