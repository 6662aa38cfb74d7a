"""Other agents' per-VM state: deprovision removes it (keeping their configuration and packages),
check names it; directories are removed without following links."""

from __future__ import annotations

import json
import os

from azprov import agent_state, check
from azprov.host import Host
from support import cli
from support.agent_leftovers import EXTENSION, KEPT, left, plant
from support.scratch_root import make_scratch_root


def test_check_names_secrets_markers_and_extensions(tmp_path):
    root = make_scratch_root(str(tmp_path / "root"))
    plant(root)
    problems = check.check_agent_state(Host(root), None)
    assert [p.check for p in problems] == ["agent_state", "agent_state"]
    waagent, cloud = (p.problem for p in problems)
    assert waagent.startswith("WALinuxAgent left the build VM's state")
    for name in ("ovf-env.xml", "TransportPrivate.pem", "Certificates.pem", "6B3E1C0A.prv", "provisioned",
                 "GoalState.1.xml", "history", EXTENSION, "/var/log/waagent.log", "/var/log/azure"):
        assert name in waagent, (name, waagent)
    assert "secrets: " in waagent and "markers: " in waagent and f"extension directories: {EXTENSION}" in waagent
    for name in ("/var/lib/cloud/seed", "/var/lib/cloud/instance", "/var/lib/cloud/instances",
                 "/var/lib/cloud/data", "/var/log/cloud-init.log"):
        assert name in cloud, (name, cloud)
    assert all(p.fix == check.DEPROVISION for p in problems)


def test_deprovision_removes_it_and_keeps_the_configuration(tmp_path):
    root = make_scratch_root(str(tmp_path / "root"), waagent=True, waagent_conf="Provisioning.Agent=disabled\n")
    plant(root)
    # a link planted in the agent's directory is removed, never followed
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    os.symlink(str(outside), os.path.join(root, "var/lib/waagent/Microsoft.Evil.Link-1.0"))
    result = cli.azprov("deprovision", "--force", "--json", "--root", root)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "/var/lib/waagent/ovf-env.xml" in summary["removed_files"]
    assert any(line.startswith("remove WALinuxAgent's per-VM state") for line in summary["done"])
    assert any(line.startswith("remove cloud-init's per-VM state") for line in summary["done"])
    assert left(root) == []
    assert (outside / "keep").read_text() == "precious"
    assert os.listdir(os.path.join(root, "var/lib/waagent")) == []  # the directory itself stays
    for path, text in KEPT.items():
        assert open(os.path.join(root, path)).read() == text
    assert os.path.exists(os.path.join(root, "usr/sbin/waagent"))
    assert check.check_agent_state(Host(root), None) == []


def test_nothing_to_do_without_them(tmp_path):
    host = Host(make_scratch_root(str(tmp_path / "root")))
    assert agent_state.find(host, "WALinuxAgent") == agent_state.find(host, "cloud-init") == []
    assert check.check_agent_state(host, None) == []


def test_many_extensions_are_shortened(tmp_path):
    root = make_scratch_root(str(tmp_path / "root"))
    for number in range(12):
        os.makedirs(os.path.join(root, f"var/lib/waagent/Microsoft.Test.Ext{number:02d}-1.0.{number}"))
    described = agent_state.describe(agent_state.find(Host(root), "WALinuxAgent"))
    assert described.startswith("extension directories: Microsoft.Test.Ext00-1.0.0") and "and 4 more" in described


def test_remove_tree_removes_everything_below_and_follows_no_link(tmp_path):
    root = make_scratch_root(str(tmp_path / "root"))
    host = Host(root)
    os.makedirs(os.path.join(root, "var/lib/waagent/a/b/c"))
    open(os.path.join(root, "var/lib/waagent/a/b/c/f"), "w").close()
    os.symlink("/etc", os.path.join(root, "var/lib/waagent/a/etc-link"))
    assert host.remove_tree("/var/lib/waagent/a") == 5  # a, b, c, f and the link
    assert os.path.exists(os.path.join(root, "etc/passwd"))
    assert host.remove_tree("/var/lib/waagent/a") == 0
