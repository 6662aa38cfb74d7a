"""Boot test: the WireServer is root's, in a booted Debian 12 with nftables and iptables.

The image is the boot tests' Debian 12 with ``nftables`` and ``iptables`` (its own cached base
tree) and azprov's package as built here (``azprov-firewall.service`` enabled by its preset).
nspawn gets ``CAP_NET_ADMIN`` so that nft works inside the container; the emulator listens on
168.63.129.16:80 and 169.254.169.254:80 in the test's network namespace, and a plain TCP
listener on 168.63.129.16:53 stands in for Azure DNS.  One tree boots three times:

1. first boot: the goal state asks for a VM extension and no guest agent is installed; azprov
   provisions and Ready reaches the fabric before azprov even asks for the extensions
   configuration; the warning naming the extension is on the serial console, in the KVP report
   and in ``azprov status``.  A step in the booted VM then asks the WireServer for its versions
   as root (answered), connects as ``nobody`` (refused), reaches port 53 and IMDS as ``nobody``
   (open, as on Azure);
2. the same tree boots again (a new network namespace: no rule survives in the kernel): the
   per-boot unit has set it again before user sessions, with the same results;
3. ``[wireserver] root_only = false`` in a drop-in: the unit leaves no rule, ``nobody``
   reaches the WireServer again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List

import pytest

from tests.boot import image as images
from tests.test_boot import (UNIT, boot_vm, console_lines, keys, kvp_reports, reports, vm,  # noqa: F401
                             workdir, workspace)

pytestmark = pytest.mark.boot

FIREWALL_UNIT = "azprov-firewall.service"
EXTENSION = "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent"
NET_ADMIN = ("--capability=CAP_NET_ADMIN",)
STEP = r"""
# Azure DNS answers on the WireServer's address, port 53: a listener stands in for it (the
# container shares the test's network namespace).
python3 -c 'import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("168.63.129.16", 53)); s.listen(8); time.sleep(60)' &
sleep 1
probe() {  # user address port -> one JSON line
python3 - "$@" <<'PY'
import json, os, socket, subprocess, sys
user, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
code = ("import socket, sys\n"
        "try:\n"
        "    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
        "    if sys.argv[2] == '80':\n"
        "        s.sendall(b'GET /?comp=versions HTTP/1.0\\r\\nHost: x\\r\\nMetadata: true\\r\\n\\r\\n')\n"
        "        print('open ' + s.recv(64).decode('latin-1').split()[1])\n"
        "    else:\n"
        "        print('open')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except OSError as e: print(type(e).__name__)\n")
prefix = [] if user == "root" else ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
out = subprocess.run(prefix + ["python3", "-c", code, address, str(port)], capture_output=True, text=True)
print(json.dumps({"probe": f"{user} {address}:{port}", "result": out.stdout.strip() or out.stderr.strip()[-200:]}))
PY
}
for user in root nobody; do
  probe $user 168.63.129.16 80; probe $user 168.63.129.16 53; probe $user 169.254.169.254 80
done
nft list table ip azprov >/dev/null 2>&1 && echo '{"nft_table": true}' || echo '{"nft_table": false}'
echo "{\"iptables_jump\": $(iptables -w -S OUTPUT | grep -c AZPROV)}"
"""


@pytest.fixture(scope="module")
def firewall_layers(workspace) -> List[Path]:
    given = os.environ.get("AZPROV_BOOT_DEB")
    deb = Path(given) if given else images.build_deb(workspace.path / "dist")
    base = images.base_tree(images.FIREWALL_PACKAGES)
    return images.make_image(workspace, base, deb, name="firewall-image")


@pytest.fixture(scope="module")
def tree(workspace, firewall_layers) -> Path:
    root = workspace.overlay(firewall_layers, "firewall-vm").root
    (root / images.RECORDER_DIR / "step").write_text(STEP)
    return root


def _boot(tree: Path, scenario: dict, label: str, workdir: Path):  # noqa: F811
    booted, records = boot_vm(tree, scenario, label, workdir, nspawn_args=NET_ADMIN)
    step = booted.record["step"] or {}
    assert step.get("rc") == 0, (step, booted.explain())
    results = {}
    for line in step["out"].splitlines():
        data = json.loads(line)
        if "probe" in data:
            results[data["probe"]] = data["result"]
        else:
            results.update(data)
    return booted, records, results


@pytest.fixture(scope="module")
def scenario(keys) -> dict:  # noqa: F811
    return dict(vm("azprov-firewall", "fwadmin", keys["vm1"][1], incarnation=3),
                extensions=[f"{EXTENSION}@1.33.2"])


@pytest.fixture(scope="module")
def first(tree, scenario, workdir):  # noqa: F811
    return _boot(tree, scenario, "firewall-1", workdir)


@pytest.fixture(scope="module")
def second(first, tree, scenario, workdir):  # noqa: F811
    return _boot(tree, scenario, "firewall-2", workdir)


@pytest.fixture(scope="module")
def switched_off(second, tree, scenario, workdir):  # noqa: F811
    dropin = tree / "etc/azprov/azprov.toml.d/50-no-firewall.toml"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("[wireserver]\nroot_only = false\n")
    return _boot(tree, scenario, "firewall-3-off", workdir)


ROOT_ONLY = {
    "root 168.63.129.16:80": "open 200",  # the WireServer answers root
    "root 168.63.129.16:53": "open",
    "nobody 168.63.129.16:80": "refused",  # ... and refuses everyone else
    "nobody 168.63.129.16:53": "open",  # DNS stays open to all
}


def _probes(results: dict) -> dict:
    """The probes, IMDS's answers reduced to whether they came (any HTTP status)."""
    found = {k: v for k, v in results.items() if " " in k}
    for user in ("root", "nobody"):
        imds = found.pop(f"{user} 169.254.169.254:80", "")
        assert imds.startswith("open "), (user, imds)  # IMDS stays reachable to all, as on Azure
    return found


def _ordered_before_user_sessions(booted) -> None:
    firewall = booted.record["units"][FIREWALL_UNIT]
    sessions = booted.record["units"]["systemd-user-sessions.service"]
    assert (firewall["ActiveState"], firewall["Result"]) == ("active", "success"), booted.explain()
    assert 0 < int(firewall["ActiveEnterTimestampMonotonic"]) <= int(sessions["InactiveExitTimestampMonotonic"])


def test_first_boot_ready_as_usual_and_only_root_reaches_the_wireserver(first):
    booted, records, results = first
    assert [r["report"]["state"] for r in reports(records)] == ["Ready"], booted.explain()
    assert booted.unit(UNIT)["Result"] == "success"
    assert _probes(results) == ROOT_ONLY, results
    assert results["nft_table"] is True and results["iptables_jump"] == 0  # nft, the one tool used
    _ordered_before_user_sessions(booted)


def test_an_extension_asked_of_an_agentless_vm_is_said_ready_is_not_delayed(first, tree):
    booted, records, _ = first
    ready = [i for i, r in enumerate(records) if r["endpoint"] == "health"]
    fetched = [i for i, r in enumerate(records)
               if r["endpoint"] == "config" and "extensionsConfig" in r.get("path", "")]
    assert len(ready) == 1 and fetched and min(fetched) > ready[0], [(r["endpoint"], r.get("path")) for r in records]
    # READY=1 (sshd, logins) came before the fetch too: the unit's start finished as usual
    assert booted.unit(UNIT)["Result"] == "success"
    said = f"{EXTENSION} 1.33.2"
    console = [line for line in console_lines(booted) if "no guest agent runs here" in line]
    assert console and said in console[0] and "Provisioning.Agent=disabled" in console[0], console_lines(booted)
    (report,) = kvp_reports(tree)
    assert report.startswith("result=success|") and said in report, report
    status = json.loads(booted.record["status_wait"]["out"])
    assert status["provisioned"] and len(status["platform_warnings"]) == 1 and said in status["platform_warnings"][0]


def test_the_rule_survives_a_reboot(second):
    booted, records, results = second
    assert reports(records) == [], "the second boot talked to the WireServer"
    assert _probes(results) == ROOT_ONLY, results
    assert results["nft_table"] is True
    _ordered_before_user_sessions(booted)


def test_switched_off_leaves_no_rule(switched_off):
    booted, records, results = switched_off
    assert results["nft_table"] is False and results["iptables_jump"] == 0, results
    assert _probes(results) == dict(ROOT_ONLY, **{"nobody 168.63.129.16:80": "open 200"}), results
    firewall = booted.record["units"][FIREWALL_UNIT]
    assert firewall["Result"] == "success", booted.explain()
