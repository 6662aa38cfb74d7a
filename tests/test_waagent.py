"""WALinuxAgent judged as it judges its own configuration: every combination of
``Provisioning.Agent``, the legacy keys, cloud-init's unit and WALinuxAgent's own unit, the
configurations distributions ship (tests/data/waagent/), and the table in docs/images/README.md."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from azprov import check, errors, guards, waagent
from azprov.host import Host
from support.scratch_root import make_scratch_root

DATA = Path(__file__).resolve().parent / "data" / "waagent"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "images" / "README.md"


def image(tmp_path, conf=None, *, installed=True, enabled=True, cloud_init_local=False) -> Host:
    root = make_scratch_root(str(tmp_path / "root"), waagent=installed, waagent_conf=conf)
    if installed and not enabled:
        os.remove(os.path.join(root, "etc/systemd/system/multi-user.target.wants/walinuxagent.service"))
    if cloud_init_local:
        wants = os.path.join(root, "etc/systemd/system/cloud-init.target.wants")
        os.makedirs(wants, exist_ok=True)
        unit = os.path.join(root, "usr/lib/systemd/system/cloud-init-local.service")
        Path(unit).write_text("[Unit]\nDescription=cloud-init local stage\n")
        os.symlink("/usr/lib/systemd/system/cloud-init-local.service", os.path.join(wants, "cloud-init-local.service"))
    return Host(root)


# (waagent.conf, cloud-init-local.service enabled) -> outcome: every row of the docs' table
COMBINATIONS = {
    "disabled": ("Provisioning.Agent=disabled\n", False, waagent.EXTENSIONS),
    "disabled, cloud-init enabled": ("Provisioning.Agent=disabled\n", True, waagent.EXTENSIONS),
    "disabled, legacy Enabled=y": ("Provisioning.Enabled=y\nProvisioning.Agent=disabled\n", False, waagent.EXTENSIONS),
    "disabled, quoted, comment": ('Provisioning.Agent = "disabled"  # extensions\n', False, waagent.EXTENSIONS),
    "auto": ("Provisioning.Agent=auto\n", False, waagent.PROVISIONS),
    "auto, cloud-init enabled": ("Provisioning.Agent=auto\n", True, waagent.WAITS_FOR_CLOUD_INIT),
    "unset": ("Extensions.Enabled=y\n", False, waagent.PROVISIONS),
    "None means unset": ("Provisioning.Agent=None\n", False, waagent.PROVISIONS),
    "unset, cloud-init enabled": ("", True, waagent.WAITS_FOR_CLOUD_INIT),
    "legacy Enabled=n alone": ("Provisioning.Enabled=n\n", False, waagent.PROVISIONS),
    "legacy Enabled=n, UseCloudInit=y": ("Provisioning.Enabled=n\nProvisioning.UseCloudInit=y\n", False,
                                         waagent.PROVISIONS),
    "Enabled=n with auto (Azure Linux)": ("Provisioning.Agent=auto\nProvisioning.Enabled=n\n", False,
                                          waagent.PROVISIONS),
    "waagent": ("Provisioning.Agent=waagent\n", False, waagent.PROVISIONS),
    "waagent, cloud-init enabled": ("Provisioning.Agent=waagent\n", True, waagent.PROVISIONS),
    "cloud-init": ("Provisioning.Agent=cloud-init\n", False, waagent.WAITS_FOR_CLOUD_INIT),
    "cloud-init, cloud-init enabled": ("Provisioning.Agent=cloud-init\n", True, waagent.WAITS_FOR_CLOUD_INIT),
    "commented-out disabled": ("#Provisioning.Agent=disabled\nProvisioning.Agent=auto\n", False, waagent.PROVISIONS),
    "last line wins": ("Provisioning.Agent=disabled\nProvisioning.Agent=waagent\n", False, waagent.PROVISIONS),
    "case matters (Disabled)": ("Provisioning.Agent=Disabled\n", False, waagent.UNDOCUMENTED),
    "case matters in the key": ("provisioning.agent=disabled\n", False, waagent.PROVISIONS),
    "undocumented none": ("Provisioning.Agent=none\n", False, waagent.UNDOCUMENTED),
}


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_every_combination(tmp_path, name, config):
    conf, cloud_init_local, outcome = COMBINATIONS[name]
    host = image(tmp_path, conf, cloud_init_local=cloud_init_local)
    verdict = waagent.judge(host)
    assert verdict.outcome == outcome, verdict
    assert guards.waagent_extensions_only(host) == (outcome == waagent.EXTENSIONS)
    problems = check.check_other_provisioners(host, None)
    if outcome == waagent.EXTENSIONS:
        assert problems == [] and guards.waagent_provisions(host) is None
        guards.check_other_provisioners(host, config.provisioning)
        return
    # every other combination: a check problem with its fix, and a refusal at first boot
    assert len(problems) == 1 and "Provisioning.Agent=disabled" in problems[0].fix, problems
    assert "WALinuxAgent" in problems[0].problem
    with pytest.raises(errors.OtherProvisioner, match="WALinuxAgent") as caught:
        guards.check_other_provisioners(host, config.provisioning)
    assert caught.value.details["provisioner"] == "walinuxagent"
    if outcome == waagent.WAITS_FOR_CLOUD_INIT:
        assert "1800 s" in problems[0].problem and "ProvisioningFailed" in problems[0].problem
    if "legacy" in name:
        assert "Provisioning.Enabled is ignored" in verdict.why


@pytest.mark.parametrize("enabled,installed", [(False, True), (False, False)])
def test_a_walinuxagent_that_never_starts_is_no_problem(tmp_path, enabled, installed):
    host = image(tmp_path, "Provisioning.Agent=auto\n", installed=installed, enabled=enabled)
    verdict = waagent.judge(host)
    assert verdict.outcome == (waagent.NOT_ENABLED if installed else waagent.ABSENT)
    assert not verdict.problem and not verdict.extensions_only
    assert check.check_other_provisioners(host, None) == []


def test_the_rpm_unit_name_counts_too(tmp_path):
    host = image(tmp_path, "Provisioning.Agent=disabled\n", enabled=False)
    wants = host.path("/etc/systemd/system/multi-user.target.wants")
    Path(host.path("/usr/lib/systemd/system/waagent.service")).write_text("[Service]\n")
    os.symlink("/usr/lib/systemd/system/waagent.service", os.path.join(wants, "waagent.service"))
    assert waagent.judge(host).extensions_only


# What the distributions ship, as they ship it: none of them is extensions-only.
SHIPPED = {
    "debian-12.conf": waagent.WAITS_FOR_CLOUD_INIT,  # Provisioning.Agent=cloud-init
    "ubuntu.conf": waagent.PROVISIONS,
    "azure-linux.conf": waagent.PROVISIONS,  # Enabled=n does not stop Agent=auto
    "rpm-2.2.47.conf": waagent.PROVISIONS,
    "upstream.conf": waagent.PROVISIONS,
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_what_distributions_ship(tmp_path, name):
    text = (DATA / name).read_text()
    host = image(tmp_path, text)
    assert waagent.judge(host).outcome == SHIPPED[name]
    assert check.check_other_provisioners(host, None)
    # ... and the one line the guides add makes each of them extensions-only
    Path(host.path(waagent.CONF)).write_text(text + "Provisioning.Agent=disabled\n")
    assert waagent.judge(host).extensions_only
    assert check.check_other_provisioners(host, None) == []


def test_shipped_firewall_settings(tmp_path):
    for name, manages in (("debian-12.conf", False), ("ubuntu.conf", True), ("azure-linux.conf", True),
                          ("rpm-2.2.47.conf", False)):
        host = image(tmp_path / name, (DATA / name).read_text() + "Provisioning.Agent=disabled\n")
        assert waagent.manages_firewall(host) is manages, name
    # a WALinuxAgent that provisions is refused anyway: its firewall does not count
    assert not waagent.manages_firewall(image(tmp_path / "auto", (DATA / "ubuntu.conf").read_text()))


def test_parse_conf_reads_as_walinuxagent_does():
    text = ('#Provisioning.Agent=disabled\n  # OS.EnableFirewall=y\nKey = "a b" # note\n'
            "Empty=\nOS.OpensslPath=None\nA=1\nA=2\nno equals sign\n")
    assert waagent.parse_conf(text) == {"# OS.EnableFirewall": "y", "Key": "a b", "Empty": "", "A": "2"}
    assert waagent.switch({"X": "Y"}, "X", False) and not waagent.switch({"X": "n"}, "X", True)
    assert waagent.switch({"X": "yes"}, "X", False) is False  # only y/n count


def _docs_table() -> dict:
    """``Provisioning.Agent`` → outcome word from the table in docs/images/README.md."""
    text = DOCS.read_text()
    section = text[text.index("<!-- waagent-table -->"):text.index("<!-- /waagent-table -->")]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`") and cells[0] != "`Provisioning.Agent`":
            rows[(cells[0], cells[1])] = re.search(r"`(\w+)`", cells[3]).group(1)
    return rows


DOC_ROWS = {
    ("`disabled`", "any"): ("Provisioning.Agent=disabled\n", None),
    ("`auto` or unset", "no"): ("Provisioning.Agent=auto\n", False),
    ("`auto` or unset", "yes"): ("", True),
    ("`waagent`", "any"): ("Provisioning.Agent=waagent\n", None),
    ("`cloud-init`", "any"): ("Provisioning.Agent=cloud-init\n", None),
    ("`Disabled`, `none`, …", "any"): ("Provisioning.Agent=none\n", None),
}


def test_the_docs_table_is_what_azprov_decides(tmp_path):
    table = _docs_table()
    assert set(table) == set(DOC_ROWS), table
    for index, (row, (conf, cloud_init_local)) in enumerate(DOC_ROWS.items()):
        for enabled in ((False, True) if cloud_init_local is None else (cloud_init_local,)):
            host = image(tmp_path / f"{index}-{enabled}", conf, cloud_init_local=enabled)
            assert waagent.judge(host).outcome == table[row], (row, enabled)


@pytest.mark.parametrize("name,kind", [
    ("ovf-env.xml", "secret"), ("TransportPrivate.pem", "secret"), ("Certificates.pem", "secret"),
    ("6A1B2C.prv", "secret"), ("CustomData", "secret"), ("provisioned", "marker"),
    ("GoalState.1.xml", "marker"), ("history", "marker"), ("published_hostname", "marker"),
    ("Microsoft.Azure.Extensions.CustomScript-2.1.10", "extension"),
    ("Microsoft.CPlat.Core.RunCommandLinux-1.0.5", "extension"),
    ("WALinuxAgent-2.9.1.1", "agent"), ("lost+found", "state")])
def test_state_entries_are_named_by_kind(name, kind):
    assert waagent.kind(name) == kind
