"""The real CLI, as a subprocess, over real HTTP against the fabric emulator on loopback."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from azprov.fabric import FabricEmulator, Scenario
from support.reports import read_fields

pytestmark = pytest.mark.emulator
DATA = Path(__file__).parent / "data" / "goalstates"
# report-ready/report-failure write the KVP pool under --root: never this machine's /var/lib/hyperv
SCRATCH = tempfile.mkdtemp(prefix="azprov-test-cli-")


def azprov(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "azprov", *args], capture_output=True, text=True,
                          timeout=timeout, env=environment)


def fabric_args(fabric) -> list:
    return ["--wireserver", fabric.wireserver_url, "--imds", fabric.imds_url]


def emulator(scenario: dict | None = None, **kwargs) -> FabricEmulator:
    return FabricEmulator(Scenario.from_dict(scenario or {}), wireserver=("127.0.0.1", 0),
                          imds=("127.0.0.1", 0), **kwargs)


def ready_reports(fabric) -> list:
    return [r for r in fabric.reports if r["state"] == "Ready"]


def test_report_ready_echoes_an_incarnation_other_than_1():
    with emulator({"incarnation": 7, "container_id": "c-77", "instance_id": "i-77._vm"}) as fabric:
        result = azprov("report-ready", "--root", SCRATCH, "--json", *fabric_args(fabric))
        assert result.returncode == 0, result.stderr
        (report,) = ready_reports(fabric)
    assert (report["incarnation"], report["container_id"], report["instance_id"]) == (7, "c-77", "i-77._vm")
    assert json.loads(result.stdout)["incarnation"] == 7


def test_410_then_success_with_the_new_incarnation():
    with emulator({"incarnation": 3, "health": [{"status": 410, "new_incarnation": 4}]}) as fabric:
        result = azprov("report-ready", "--root", SCRATCH, *fabric_args(fabric))
        assert result.returncode == 0, result.stderr
        assert [r["incarnation"] for r in ready_reports(fabric)] == [4]
        health_statuses = [r["status"] for r in fabric.requests if r["endpoint"] == "health"]
    assert health_statuses == [410, 200]


def test_500_500_500_then_success():
    with emulator({"goalstate": [{"status": 500, "repeat": 3}]}) as fabric:
        result = azprov("report-ready", "--root", SCRATCH, "-v", *fabric_args(fabric))
        assert result.returncode == 0, result.stderr
        statuses = [r["status"] for r in fabric.requests if r["endpoint"] == "goalstate"]
    assert statuses == [500, 500, 500, 200]
    assert result.stderr.count("HTTP 500; retrying in") == 3


def test_429_with_retry_after_is_honoured():
    with emulator({"goalstate": [{"status": 429, "retry_after": "2"}]}) as fabric:
        result = azprov("report-ready", "--root", SCRATCH, "-v", *fabric_args(fabric))
        assert result.returncode == 0, result.stderr
        times = [r["t"] for r in fabric.requests if r["endpoint"] == "goalstate"]
    assert times[1] - times[0] >= 1.9
    assert "(Retry-After 2 s + jitter)" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_until_the_server_appears():
    port = free_port()
    fabric = FabricEmulator(Scenario.from_dict({}), wireserver=("127.0.0.1", port), imds=("127.0.0.1", 0))
    starter = threading.Timer(2.0, fabric.start)
    starter.start()
    try:
        result = azprov("report-ready", "--root", SCRATCH, "-v", "--wireserver", f"127.0.0.1:{port}", "--timeout", "30")
        assert result.returncode == 0, result.stderr
        assert "connection refused" in result.stderr
        assert len(ready_reports(fabric)) == 1
    finally:
        starter.join()
        fabric.stop()


def test_a_dead_proxy_in_the_environment_does_not_matter():
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"http_proxy": dead, "HTTP_PROXY": dead, "https_proxy": dead, "ALL_PROXY": dead, "NO_PROXY": ""}
    with emulator() as fabric:
        assert azprov("report-ready", "--root", SCRATCH, *fabric_args(fabric), env=env).returncode == 0
        assert azprov("metadata", *fabric_args(fabric), env=env).returncode == 0
        assert len(ready_reports(fabric)) == 1


@pytest.mark.parametrize("name", ["billion-laughs.xml", "external-entity.xml"])
def test_hostile_goal_states_are_refused_with_a_clear_error(name):
    body = (DATA / name).read_text()
    with emulator({"goalstate": [{"status": 200, "body": body, "repeat": 100}]}) as fabric:
        result = azprov("goalstate", *fabric_args(fabric))
        assert not fabric.reports
    assert result.returncode == 5
    assert result.stderr.strip().startswith("azprov: goal state refused: hostile XML")
    assert "Traceback" not in result.stderr


def test_the_deadline_is_honoured_within_a_second():
    port = free_port()  # nothing listens there: connection refused forever
    started = time.monotonic()
    result = azprov("report-ready", "--root", SCRATCH, "--wireserver", f"127.0.0.1:{port}", "--timeout", "3")
    elapsed = time.monotonic() - started
    assert result.returncode == 4
    assert "before the deadline (3 s" in result.stderr
    assert 2.0 <= elapsed <= 4.0 + 0.5  # 3 s deadline, within a second, plus interpreter start


def test_report_failure_carries_the_reason():
    with emulator() as fabric:
        result = azprov("report-failure", "--root", SCRATCH, "--reason", "disk <setup> failed|badly", *fabric_args(fabric))
        assert result.returncode == 0, result.stderr
        (report,) = fabric.reports
    assert report["state"] == "NotReady" and report["substatus"] == "ProvisioningFailed"
    fields = dict(read_fields(report["description"]))  # a CSV row: the "|" is quoted, not lost
    assert fields["reason"] == "reported_by_hand" and fields["message"] == "disk <setup> failed|badly"
    assert "|'message=disk <setup> failed|badly'|" in report["description"]
    from azprov import kvp
    from azprov.host import Host

    (value,) = [v for k, v in kvp.read_pool(Host(SCRATCH)) if k == kvp.PROVISIONING_REPORT]
    assert value == report["description"]


def test_report_ready_json_protocol_posts_to_provisioning_health(tmp_path):
    with emulator() as fabric:
        result = azprov("report-ready", "--root", str(tmp_path), "--protocol", "json", "--json",
                        *fabric_args(fabric))
        assert result.returncode == 0, result.stderr
        (request,) = [r for r in fabric.requests if r["endpoint"] == "provisioning_health"]
        assert not [r for r in fabric.requests if r["endpoint"] in ("goalstate", "health")]
    assert request["status"] == 201 and request["violations"] == []
    assert request["report"]["state"] == "Ready"
    assert json.loads(result.stdout)["protocol"] == "json"
    from azprov import kvp
    from azprov.host import Host

    (value,) = [v for k, v in kvp.read_pool(Host(str(tmp_path))) if k == kvp.PROVISIONING_REPORT]
    assert value.startswith("result=success|agent=azprov/")


def test_report_failure_json_protocol_carries_the_description(tmp_path):
    with emulator() as fabric:
        result = azprov("report-failure", "--root", str(tmp_path), "--protocol", "json",
                        "--reason", "disk setup failed", *fabric_args(fabric))
        assert result.returncode == 0, result.stderr
        (request,) = [r for r in fabric.requests if r["endpoint"] == "provisioning_health"]
    assert request["report"]["state"] == "NotReady" and request["report"]["substatus"] == "ProvisioningFailed"
    assert "reason=reported_by_hand" in request["report"]["description"]


@pytest.mark.parametrize("status, retry_after", [(429, "1"), (503, "1")])
def test_json_protocol_retries_429_and_503_honouring_retry_after(tmp_path, status, retry_after):
    scenario = {"provisioning_health": [{"status": status, "retry_after": retry_after, "repeat": 2}]}
    with emulator(scenario) as fabric:
        result = azprov("report-ready", "-v", "--root", str(tmp_path), "--protocol", "json",
                        *fabric_args(fabric))
        assert result.returncode == 0, result.stderr
        requests = [r for r in fabric.requests if r["endpoint"] == "provisioning_health"]
    assert [r["status"] for r in requests] == [status, status, 201]
    assert requests[1]["t"] - requests[0]["t"] >= 0.95 and requests[2]["t"] - requests[1]["t"] >= 0.95
    assert result.stderr.count(f"HTTP {status}; retrying in") == 2


def test_json_protocol_other_4xx_fails_with_the_servers_reason(tmp_path):
    scenario = {"provisioning_health": [{"status": 403, "body": "agent not allowed to report",
                                         "headers": {"Content-Type": "text/plain"}}]}
    with emulator(scenario) as fabric:
        result = azprov("report-ready", "--root", str(tmp_path), "--protocol", "json", *fabric_args(fabric))
        assert len([r for r in fabric.requests if r["endpoint"] == "provisioning_health"]) == 1
    assert result.returncode == 5
    assert "answered HTTP 403: agent not allowed to report" in result.stderr


def test_goalstate_and_metadata_print_what_they_read():
    with emulator({"incarnation": 9, "computer_name": "web-9", "admin_username": "ops"}) as fabric:
        goal = json.loads(azprov("goalstate", "--json", *fabric_args(fabric)).stdout)
        meta = json.loads(azprov("metadata", "--json", *fabric_args(fabric)).stdout)
        text = azprov("metadata", *fabric_args(fabric)).stdout
    assert goal["incarnation"] == 9
    assert (meta["computer_name"], meta["admin_username"]) == ("web-9", "ops")
    assert "computer_name: web-9" in text


DISC_PASSWORD = "Metadata-Secret-" + secrets.token_hex(6)  # unique: searched for in the output


@pytest.mark.parametrize("build", ["genisoimage -udf", "iso9660", "udf only", "pycdlib udf 2.60"])
def test_metadata_shows_the_real_disc_with_the_password_redacted(tmp_path, build):
    """``azprov metadata --root`` reads a real disc image at DIR/dev/sr0 (built with genisoimage or
    pycdlib, read by azprov's user-space readers): everything it carries is shown but the password."""
    from support import discs
    from support.fakes import ED25519

    ovf = discs.ovf_env(hostname="disc-host", username="discadmin", password=DISC_PASSWORD,
                        keys=(("F00D", ED25519),), custom_data="IyEvYmluL3NoCmVjaG8gaGVsbG8K")
    image = {"genisoimage -udf": lambda: discs.genisoimage(tmp_path, ovf, "-udf"),
             "iso9660": lambda: discs.genisoimage(tmp_path, ovf),
             "udf only": lambda: discs.udf_only(tmp_path, ovf),
             "pycdlib udf 2.60": lambda: discs.pycdlib_udf260(tmp_path, ovf)}[build]()
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    shutil.copy(image, root / "dev" / "sr0")
    with emulator({"computer_name": "imds-host"}) as fabric:
        as_json = azprov("metadata", "--json", "--root", str(root), "-vv", *fabric_args(fabric))
        as_text = azprov("metadata", "--root", str(root), "-vv", *fabric_args(fabric))
    for result in (as_json, as_text):
        assert result.returncode == 0, result.stderr
        assert DISC_PASSWORD not in result.stdout + result.stderr
    disc = json.loads(as_json.stdout)["provisioning_disc"]
    assert disc["device"] == "/dev/sr0" and disc["read_by"] in ("udf", "iso9660")
    assert (disc["hostname"], disc["username"], disc["password"]) == ("disc-host", "discadmin", "(set, redacted)")
    assert disc["ssh_keys"] == [{"path": "/home/discadmin/.ssh/authorized_keys", "fingerprint": "F00D",
                                 "value": ED25519[:40] + "..."}]
    assert disc["custom_data_bytes"] == len("#!/bin/sh\necho hello\n")
    assert disc["preprovisioned_vm"] is False
    assert json.loads(as_json.stdout)["computer_name"] == "imds-host"  # IMDS's view beside the disc's
    line = [text for text in as_text.stdout.splitlines() if text.startswith("provisioning_disc: ")]
    assert line and "'disc-host'" in line[0] and "'(set, redacted)'" in line[0] and "F00D" in line[0]


def _dhcpcd_packet(address: bytes) -> bytes:
    header = bytes(236) + bytes([99, 130, 83, 99])  # BOOTP header, then the magic cookie
    options = bytes([53, 1, 5]) + bytes([245, 4]) + address + bytes([255])
    return header + options


LEASES = {
    "networkd": ("run/systemd/netif/leases/2",
                 "# This is private data. Do not parse.\nADDRESS=10.0.0.4\nOPTION_245=a83f8111\n"),
    "dhclient": ("var/lib/dhcp/dhclient.eth0.leases",
                 "lease {\n  interface \"eth0\";\n  fixed-address 10.0.0.4;\n"
                 "  option unknown-245 a8:3f:81:11;\n  expire never;\n}\n"),
    "dhcpcd": ("var/lib/dhcpcd/eth0.lease", _dhcpcd_packet(bytes([168, 63, 129, 17]))),
}


@pytest.mark.parametrize("kind", sorted(LEASES))
def test_endpoint_reads_option_245_from_each_lease_kind(tmp_path, kind):
    relative, content = LEASES[kind]
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = azprov("endpoint", "--json", "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["address"] == "168.63.129.17"
    assert kind in found["source"] and relative in found["source"]


def test_endpoint_falls_back_to_the_default_address(tmp_path):
    result = azprov("endpoint", "--root", str(tmp_path))
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["address: 168.63.129.16", "source: default (no DHCP option 245 found)"]


def test_bad_address_on_the_command_line_is_a_usage_error():
    result = azprov("goalstate", "--wireserver", "https://example.invalid")
    assert result.returncode == 2
    assert "argument --wireserver" in result.stderr and "plain http" in result.stderr


def test_bad_address_in_the_configuration_file_is_a_configuration_error(tmp_path):
    (tmp_path / "azprov.toml").write_text('[wireserver]\naddress = "https://example.invalid"\n')
    result = azprov("goalstate", "--config", str(tmp_path / "azprov.toml"))
    assert result.returncode == 3
    assert "[wireserver] address" in result.stderr and "plain http" in result.stderr


def test_config_prints_effective_configuration_as_toml(tmp_path):
    (tmp_path / "azprov.toml").write_text("[imds]\ndeadline = 60\n")
    result = azprov("config", "--timeout", "5", "--config", str(tmp_path / "azprov.toml"))
    assert result.returncode == 0, result.stderr
    assert "[wireserver]" in result.stdout and "deadline = 5" in result.stdout
    assert "deadline = 60" not in result.stdout  # --timeout caps the file's 60 s too
