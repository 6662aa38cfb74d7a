"""The WireServer is root's: real nft and iptables rules in a private network namespace.

Each test runs a script under ``unshare --net``: the namespace gets 168.63.129.16 and
169.254.169.254 on its loopback with TCP listeners on the WireServer's ports 80 and 53 and on
IMDS's port 80, applies azprov's rule with the tool named, and connects as root and as
``nobody`` (``setpriv``), so what is proven is what the kernel does, not the command line.
Nothing leaves the namespace."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from azprov import firewall
from azprov.address import parse_address
from azprov.host import Host
from support.scratch_root import make_scratch_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDS = ("unshare", "setpriv", "ip")

SCRIPT = r"""
import dataclasses, json, os, socket, subprocess, sys, threading
sys.path.insert(0, REPO)
from azprov import firewall
from azprov.config import load_config
from azprov.host import Host

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
for address in ("168.63.129.16/32", "169.254.169.254/32"):
    subprocess.run(["ip", "addr", "add", address, "dev", "lo"], check=True)
listeners = []
for address, port in (("168.63.129.16", 80), ("168.63.129.16", 53), ("169.254.169.254", 80)):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen(16)
    listeners.append(server)
    def serve(server=server):
        while True:
            connection, _ = server.accept()
            connection.close()
    threading.Thread(target=serve, daemon=True).start()

PROBE = ("import socket, sys\n"
         "try:\n"
         "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close(); print('open')\n"
         "except ConnectionRefusedError: print('refused')\n"
         "except OSError as e: print(type(e).__name__)\n")

def reach(user, address, port):
    prefix = [] if user == "root" else ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    out = subprocess.run(prefix + [PROBE_PYTHON, "-c", PROBE, address, str(port)], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()[-200:]

def probe():
    return {f"{user} {address}:{port}": reach(user, address, port)
            for user in ("root", "nobody")
            for address, port in (("168.63.129.16", 80), ("168.63.129.16", 53), ("169.254.169.254", 80))}

def rules():
    nft = subprocess.run(["nft", "list", "table", "ip", "azprov"], capture_output=True, text=True)
    ipt = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True)
    return {"nft": nft.stdout if nft.returncode == 0 else None,
            "iptables": [line for line in ipt.stdout.splitlines() if "AZPROV" in line]}

config = load_config(Host(ROOT))
host = Host("/")
result = {"before": probe()}
first = firewall.apply(host, config, available=TOOLS)
result["outcome"] = dataclasses.asdict(first)
result["after"] = probe()
result["rules"] = rules()
firewall.apply(host, config, available=TOOLS)
result["rules_again"] = rules()
result["present"] = firewall.present(host)
off = dataclasses.replace(config, wireserver=dataclasses.replace(config.wireserver, root_only=False))
result["off"] = dataclasses.asdict(firewall.apply(host, off, available=TOOLS))
result["after_off"] = probe()
result["rules_off"] = rules()
print(json.dumps(result))
"""


# The connection probe runs as nobody too: an interpreter every user may run (the test's own may
# live in root's home, as pyenv's do). It needs only the standard library.
PROBE_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def run_in_netns(tmp_path, tools):
    missing = [tool for tool in NEEDS + tuple(tools) if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"needs root and {', '.join(missing) or 'root'} for a private network namespace")
    root = make_scratch_root(str(tmp_path / "root"))
    script = SCRIPT.replace("PROBE_PYTHON", repr(PROBE_PYTHON)).replace("REPO", repr(REPO)).replace("ROOT", repr(root)).replace("TOOLS", repr(list(tools)))
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


OPEN = {f"{user} {target}": "open" for user in ("root", "nobody")
        for target in ("168.63.129.16:80", "168.63.129.16:53", "169.254.169.254:80")}


@pytest.mark.parametrize("tool", ["nft", "iptables"])
def test_only_root_reaches_the_wireserver(tmp_path, tool):
    result = run_in_netns(tmp_path, [tool])
    assert result["before"] == OPEN, result["before"]
    assert result["outcome"]["action"] == "applied" and result["outcome"]["tool"] == tool
    assert result["outcome"]["addresses"] == ["168.63.129.16"]
    # root reaches the WireServer; nobody is refused on its port 80 but still reaches DNS and IMDS
    assert result["after"] == dict(OPEN, **{"nobody 168.63.129.16:80": "refused"}), result["after"]
    # applying again changes nothing; the rule is where the tool keeps it
    assert result["rules_again"] == result["rules"]
    assert result["present"] == [tool]
    if tool == "nft":
        assert "meta skuid 0 accept" in result["rules"]["nft"] and result["rules"]["iptables"] == []
    else:
        assert result["rules"]["nft"] is None
        assert "-A OUTPUT -j AZPROV-WIRESERVER" in result["rules"]["iptables"]
        assert len(result["rules"]["iptables"]) == 1 + 1 + 3  # chain, jump, three rules
    # switched off: no rule left, everyone reaches everything again
    assert result["off"]["action"] == "removed"
    assert result["after_off"] == OPEN
    assert result["rules_off"] == {"nft": None, "iptables": []}


def test_both_tools_present_one_rule(tmp_path):
    result = run_in_netns(tmp_path, ["nft", "iptables"])
    assert result["outcome"]["tool"] == "nft" and result["present"] == ["nft"]
    assert result["rules"]["iptables"] == []


def test_the_nft_transaction_replaces_the_table_whole():
    script = firewall.nft_script(("168.63.129.16", "10.1.2.3"))
    lines = script.splitlines()
    assert lines[:2] == ["table ip azprov", "delete table ip azprov"]
    assert "ip daddr { 168.63.129.16, 10.1.2.3 } tcp dport 53 accept" in script
    assert script.index("tcp dport 53 accept") < script.index("skuid 0 accept") < script.index("reject")


def test_addresses_default_lease_and_configuration(tmp_path, config):
    root = make_scratch_root(str(tmp_path / "root"))
    host = Host(root)
    assert firewall.addresses(host, config) == ("168.63.129.16",)  # the image's lease says the default
    with open(os.path.join(root, "var/lib/dhcp/dhclient.eth0.leases"), "w") as lease:
        lease.write('lease {\n  interface "eth0";\n  option unknown-245 a:1:2:3;\n}\n')
    assert firewall.addresses(host, config) == ("168.63.129.16", "10.1.2.3")
    for configured, expected in (("127.0.0.1:8080", ("168.63.129.16",)),  # loopback: never
                                 ("169.254.169.254", ("168.63.129.16",)),  # link-local (IMDS): never
                                 ("http://10.9.9.9:80", ("168.63.129.16", "10.9.9.9"))):
        custom = dataclasses.replace(config, wireserver=dataclasses.replace(config.wireserver,
                                                                            address=parse_address(configured)))
        assert firewall.addresses(host, custom) == expected, configured


def test_walinuxagent_managing_its_own_rule_is_left_alone(tmp_path, config):
    calls = []

    class Recording(Host):
        def which(self, name):
            return f"/usr/sbin/{name}"

        def run(self, argv, **kwargs):
            calls.append(list(argv))
            return subprocess.CompletedProcess(argv, 1, "", "")

    root = make_scratch_root(str(tmp_path / "root"), waagent=True,
                             waagent_conf="Provisioning.Agent=disabled\nOS.EnableFirewall=y\n")
    outcome = firewall.apply(Recording(root), config)
    assert outcome.action == "left_to_walinuxagent"
    assert all(argv[0] in ("nft", "iptables") and "-A" not in argv and "-f" not in argv for argv in calls), calls


def test_no_tool_is_said_but_never_fails_provisioning(tmp_path, config, caplog):
    class Bare(Host):
        live = True  # as on a VM: the flow's call acts only on the running machine

        def which(self, name):
            return None

    host = Bare(make_scratch_root(str(tmp_path / "root")))
    outcome = firewall.apply(host, config)
    assert outcome.action == "no_tool" and "neither nft nor iptables" in outcome.message
    firewall.after_provisioning(host, config)  # a warning only
    assert "could not keep the WireServer to root" in caplog.text


def test_an_image_tree_never_touches_this_machines_rules(tmp_path, config):
    class Recording(Host):
        def run(self, argv, **kwargs):
            raise AssertionError(f"ran {argv}")

    firewall.after_provisioning(Recording(make_scratch_root(str(tmp_path / "root"))), config)


def test_a_failing_tool_is_firewall_failed_and_a_warning_after_ready(tmp_path, config, caplog):
    class Failing(Host):
        live = True

        def which(self, name):
            return f"/usr/sbin/{name}" if name == "nft" else None

        def run(self, argv, **kwargs):
            return subprocess.CompletedProcess(argv, 1, "", "Error: Could not process rule: Operation not permitted")

    host = Failing(make_scratch_root(str(tmp_path / "root")))
    with pytest.raises(firewall.FirewallFailed, match="Operation not permitted") as caught:
        firewall.apply(host, config)
    assert caught.value.reason == "firewall_failed" and caught.value.exit_code == 6
    firewall.after_provisioning(host, config)
    assert "could not keep the WireServer to root: nft -f - failed" in caplog.text
