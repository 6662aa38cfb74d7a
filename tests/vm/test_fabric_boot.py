"""``azprov fabric boot IMAGE`` run as a command (``--json``) on four images, booting at the same time:

- **the guide-built image** (tests/vm/guide_image.py: Debian 12 with waagent, the guides'
  install-azprov.sh, ``azprov deprovision --force --user``, ``azprov check``; a GPT disk with an
  EFI system partition and GRUB) as a fixed VHD, the format Azure takes, with a password and
  custom data: it boots with UEFI (OVMF, a Generation 2 VM), azprov reads the disc from the SCSI
  DVD drive (custom data the disc did not deliver would fail provisioning) and the image would
  provision (exit 0); its disk afterwards holds the admin with the password and key, the host
  name, the unit disabled;
- the same disk as qcow2 with ``--firmware bios`` (a Generation 1 VM: SeaBIOS, EXTLINUX, the
  disc on the IDE DVD drive) would provision too;
- one whose azprov unit is disabled and one with a broken sshd drop-in would not (exit 10),
  each with its reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.boot.image import CLEAN_ENV, REPO
from tests.boot import image as images
from tests.vm import guide_image, harness
from tests.vm import image as vmimages

pytestmark = harness.MARKS

BROKEN_SSHD = "# a typo an image build left behind\nPasswordAuthenticaton no\n"
# The guide-built image's VM: a password and custom data, both only on the provisioning disc.
GUIDE_SCENARIO = {"computer_name": "guide-gen2", "admin_username": "builder",
                  "admin_password": "Guide-built-Gen2-pw1", "custom_data": "#!/bin/sh\necho from the disc\n"}


def fabric_boot(image: Path, keep: Path, *options: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "azprov", "fabric", "boot", "--json", "--keep", str(keep),
            "--timeout", str(harness.TIMEOUT), *options, str(image)]
    return subprocess.Popen(argv, cwd=REPO, env=dict(CLEAN_ENV, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def direct_kernel(image: vmimages.VmImage):
    return ("--kernel", str(image.kernel), "--initrd", str(image.initrd), "--append", image.append)


@pytest.fixture(scope="module")
def verdicts(vm_workspace, vm_deb, bookworm):
    directory = vm_workspace.path / "vms" / "fabric-boot"
    directory.mkdir(parents=True)
    sshd_conf = directory / "50-broken.conf"
    sshd_conf.write_text(BROKEN_SSHD)
    sshd_conf.chmod(0o644)
    scenario = directory / "guide-scenario.json"
    scenario.write_text(json.dumps(GUIDE_SCENARIO))
    disabled = vmimages.variant(bookworm, directory / "disabled.raw", [f"rm {harness.ENABLE_LINK}"])
    broken = vmimages.variant(bookworm, directory / "broken-sshd.raw",
                              ["cd /etc/ssh/sshd_config.d", f"write {sshd_conf} 50-broken.conf"])
    assert not vmimages.exists(disabled.disk, harness.ENABLE_LINK)
    assert vmimages.read_file(broken.disk, "/etc/ssh/sshd_config.d/50-broken.conf") == BROKEN_SSHD
    guide_raw = guide_image.guide_disk(vm_workspace, vm_deb)
    guide_vhd = guide_image.convert(guide_raw, directory / "guide.vhd", "vpc")
    guide_qcow2 = guide_image.convert(guide_raw, directory / "guide.qcow2", "qcow2")
    boots = {
        "guide": (guide_vhd, ("--scenario", str(scenario))),
        "guide-gen1": (guide_qcow2, ("--firmware", "bios")),
        "disabled": (disabled.disk, direct_kernel(disabled)),
        "broken-sshd": (broken.disk, direct_kernel(broken)),
    }
    running = {name: fabric_boot(image, directory / name, *options) for name, (image, options) in boots.items()}
    found = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=harness.TIMEOUT + 300)
        found[name] = (process.returncode, out, err)
    # the guide VM's disk as it powered off (absent when the VM never started: its verdict says why)
    overlay, raw = directory / "guide" / "vm" / "disk.qcow2", directory / "guide-after.raw"
    found["guide-disk"] = found["guide-data"] = None
    if overlay.exists():
        images.run(["qemu-img", "convert", "-O", "raw", str(overlay), str(raw)], timeout=600)
        found["guide-disk"] = harness.disk_state(guide_image.root_partition(raw), GUIDE_SCENARIO["admin_username"])
        found["guide-data"] = json.loads((directory / "guide" / "vm" / "scenario.json").read_text())
        raw.unlink()
    for path in (disabled.disk, broken.disk, guide_vhd, guide_qcow2):
        path.unlink()
    return found


def _verdict(found, name):
    code, out, err = found[name]
    try:
        return code, json.loads(out)
    except ValueError:
        raise AssertionError(f"{name}: exit {code}, no JSON verdict:\n{out}\n{err[-3000:]}")


def test_the_guide_built_gen2_image_would_provision_with_a_password_from_the_scsi_dvd(verdicts, tmp_path):
    code, verdict = _verdict(verdicts, "guide")
    assert code == 0, verdict
    assert verdict["would_provision"] and verdict["ready"] and verdict["ssh_login"], verdict
    assert verdict["format"] == "vpc" and verdict["firmware"] == "uefi" and verdict["unit_disabled"] is True
    assert verdict["hostname"] == verdict["expected_hostname"] == GUIDE_SCENARIO["computer_name"]
    assert 0 < verdict["seconds_to_ready"] <= verdict["seconds_to_login"]
    assert GUIDE_SCENARIO["computer_name"] in verdict["dhcp_hostnames"]
    data, disk = verdicts["guide-data"], verdicts["guide-disk"]
    assert disk is not None and data is not None, "the guide VM's disk overlay is missing"
    harness.check_converged(disk, data, tmp_path)
    # the password came from the disc: a hash that verifies it, set by azprov (nothing else knows it)
    shadow_hash = disk.table("/etc/shadow")[GUIDE_SCENARIO["admin_username"]][1]
    assert shadow_hash.startswith("$"), shadow_hash
    assert harness.password_matches(GUIDE_SCENARIO["admin_password"], shadow_hash)


def test_the_guide_built_image_would_provision_as_gen1_with_bios_too(verdicts):
    code, verdict = _verdict(verdicts, "guide-gen1")
    assert code == 0, verdict
    assert verdict["would_provision"] and verdict["ready"] and verdict["ssh_login"], verdict
    assert verdict["hostname"] == verdict["expected_hostname"] and verdict["unit_disabled"] is True
    assert verdict["format"] == "qcow2" and verdict["firmware"] == "bios"
    assert 0 < verdict["seconds_to_ready"] <= verdict["seconds_to_login"]
    assert verdict["reason"] is None and verdict["exit_code"] == 0
    assert verdict["failure"] is None and verdict["dhcp_hostnames"]


def test_an_image_with_the_unit_disabled_fails_saying_the_agent_did_not_run(verdicts):
    code, verdict = _verdict(verdicts, "disabled")
    assert code == 10, verdict
    assert not verdict["would_provision"] and not verdict["ready"]
    assert verdict["requests"] == 0
    assert "did not run" in verdict["failure"] and "azprov.service" in verdict["failure"], verdict["failure"]
    assert verdict["reason"] == "image_would_not_provision" and verdict["exit_code"] == 10
    assert verdict["console_tail"], "no serial console lines in a failed verdict"


def test_an_image_with_a_broken_sshd_config_fails_with_the_reason(verdicts):
    code, verdict = _verdict(verdicts, "broken-sshd")
    assert code == 10, verdict
    assert not verdict["would_provision"]
    assert verdict["failure"], verdict
    assert "SSH login with the key failed" in verdict["failure"], verdict["failure"]
    # the serial console says it failed to start (systemd cuts long names to 80 columns: "ssh.servic…")
    assert "failed to start: ssh.servic" in verdict["failure"], verdict["failure"]
    assert verdict["console_tail"]


def test_a_vm_that_qemu_refuses_to_start_fails_with_qemus_own_words(vm_workspace, tmp_path):
    """QEMU exits at once (more guest memory than any host has): the verdict says so, with
    QEMU's message, instead of waiting for a report that cannot come."""
    disk = tmp_path / "blank.raw"
    with open(disk, "wb") as handle:
        handle.truncate(1024 * 1024)
    process = fabric_boot(disk, tmp_path / "keep", "--memory", str(64 * 1024 * 1024))
    out, err = process.communicate(timeout=300)
    code, verdict = _verdict({"refused": (process.returncode, out, err)}, "refused")
    assert code == 10 and not verdict["would_provision"], verdict
    assert "crashed before reporting Ready (QEMU exited 1: " in verdict["failure"], verdict["failure"]
    assert "memory" in verdict["failure"].lower(), verdict["failure"]
