"""``azprov fabric boot IMAGE`` run as a command (``--json``) on three images: the good image
would provision (exit 0); one whose azprov unit is disabled and one with a broken sshd drop-in
would not (exit 10), each with its reason.  The three VMs boot at the same time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.boot.image import CLEAN_ENV, REPO
from tests.vm import harness
from tests.vm import image as vmimages

pytestmark = harness.MARKS

BROKEN_SSHD = "# a typo an image build left behind\nPasswordAuthenticaton no\n"


def fabric_boot(image: vmimages.VmImage, keep) -> subprocess.Popen:
    argv = [sys.executable, "-m", "azprov", "fabric", "boot", "--json", "--keep", str(keep),
            "--kernel", str(image.kernel), "--initrd", str(image.initrd), "--append", image.append,
            "--timeout", str(harness.TIMEOUT), str(image.disk)]
    return subprocess.Popen(argv, cwd=REPO, env=dict(CLEAN_ENV, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def verdicts(vm_workspace, bookworm):
    directory = vm_workspace.path / "vms" / "fabric-boot"
    directory.mkdir(parents=True)
    sshd_conf = directory / "50-broken.conf"
    sshd_conf.write_text(BROKEN_SSHD)
    sshd_conf.chmod(0o644)
    images = {
        "good": bookworm,
        "disabled": vmimages.variant(bookworm, directory / "disabled.raw",
                                     [f"rm {harness.ENABLE_LINK}"]),
        "broken-sshd": vmimages.variant(bookworm, directory / "broken-sshd.raw",
                                        ["cd /etc/ssh/sshd_config.d", f"write {sshd_conf} 50-broken.conf"]),
    }
    assert not vmimages.exists(images["disabled"].disk, harness.ENABLE_LINK)
    assert vmimages.read_file(images["broken-sshd"].disk, "/etc/ssh/sshd_config.d/50-broken.conf") == BROKEN_SSHD
    running = {name: fabric_boot(image, directory / name) for name, image in images.items()}
    found = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=harness.TIMEOUT + 300)
        found[name] = (process.returncode, out, err)
    for name in ("disabled", "broken-sshd"):
        images[name].disk.unlink()
    return found


def _verdict(found, name):
    code, out, err = found[name]
    try:
        return code, json.loads(out)
    except ValueError:
        raise AssertionError(f"{name}: exit {code}, no JSON verdict:\n{out}\n{err[-3000:]}")


def test_a_good_image_would_provision(verdicts):
    code, verdict = _verdict(verdicts, "good")
    assert code == 0, verdict
    assert verdict["would_provision"] and verdict["ready"] and verdict["ssh_login"], verdict
    assert verdict["hostname"] == verdict["expected_hostname"]
    assert verdict["format"] == "raw" and verdict["firmware"] == "bios"
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
