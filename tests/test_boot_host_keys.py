"""Boot tests: SSH host keys in a real boot (Debian 12, OpenSSH 9.2, systemd as PID 1, the .deb).

- An image that still carries host keys (made in the tree with the image's own ``ssh-keygen -A``,
  as a build VM captured without ``azprov deprovision`` would) comes up with different keys; the
  new fingerprints are on the serial console, and the keys sshd serves over the network
  (``ssh-keyscan`` from inside the VM) are the new ones; the admin user logs in.
- An image whose Ed25519 key is a zero-length file (a power cut after ``ssh-keygen -A``), with
  ``keep_host_keys = true`` so only broken keys are made: the empty key is made again, sshd loads
  it (``ssh-keyscan -t ed25519`` gets it), the two sound keys are kept.

Uses the fixtures of tests/test_boot.py (same image, same emulator).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Dict

import pytest

from tests.boot import image as images
from tests.boot import nspawn
from tests.test_boot import (boot_vm, check_ssh_login, console_lines, keys, layers, reports, vm,  # noqa: F401
                             workdir, workspace)

pytestmark = pytest.mark.boot

KINDS = ("ed25519", "ecdsa", "rsa")
# Run in the booted VM by the recorder (tests/boot/units/), once sshd has started and azprov has
# finished (READY=1 comes before the RSA key is made: sshd starts on the others): the keys sshd
# really serves, one line per type (OpenSSH 9.2 serves the late RSA key without a reload).
SCAN = "azprov status --wait >/dev/null 2>&1\nfor t in ed25519 ecdsa rsa; do ssh-keyscan -T 10 -t $t 127.0.0.1; done\n"


def publics(tree: Path) -> Dict[str, str]:
    """kind -> "algorithm base64" of each ``.pub`` in the tree."""
    return {kind: " ".join((tree / f"etc/ssh/ssh_host_{kind}_key.pub").read_text().split()[:2]) for kind in KINDS}


def fingerprint(public: str) -> str:
    blob = base64.b64decode(public.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def served(booted: nspawn.Boot) -> Dict[str, str]:
    """kind -> "algorithm base64" sshd offered to ssh-keyscan inside the VM."""
    step = booted.record["step"]
    assert step is not None and step["rc"] == 0, step
    found = {}
    for line in step["out"].splitlines():
        words = line.split()
        if len(words) >= 3:
            kind = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}.get(words[1], "ecdsa")
            found[kind] = f"{words[1]} {words[2]}"
    return found


def image_with_keys(workspace, layers, label: str) -> Path:
    """A fresh tree of the image whose build VM left its host keys (the image's own ssh-keygen -A);
    the recorder scans the keys sshd serves."""
    tree = workspace.overlay(layers, label).root
    made = nspawn.run_in(tree, ["ssh-keygen", "-A"])
    assert made.returncode == 0, made.stderr
    (tree / images.RECORDER_DIR / "step").write_text(SCAN)
    return tree


def test_an_image_with_host_keys_comes_up_with_new_ones_shown_on_the_console(workspace, layers, keys, workdir):
    tree = image_with_keys(workspace, layers, "hostkeys-image-keys")
    old = publics(tree)
    scenario = vm("azprov-boot-keys", "keysadmin", keys["vm1"][1], incarnation=2)
    booted, records = boot_vm(tree, scenario, "hostkeys-image-keys", workdir, login_key=keys["vm1"][0])
    assert [r["report"]["state"] for r in reports(records)] == ["Ready"], booted.explain()
    check_ssh_login(booted, scenario)
    new = publics(tree)
    for kind in KINDS:
        assert new[kind] != old[kind], f"the image's {kind} host key survived on a new VM"
    assert served(booted) == new, "sshd does not serve the keys on disk"
    lines = console_lines(booted)
    for kind in KINDS:
        assert f"azprov: SSH host key {kind.upper()} {fingerprint(new[kind])}" in lines, lines
        assert any(fingerprint(old[kind]) in line and "replacing SSH host key" in line for line in lines), lines
    # the record of which VM the keys are for: the DMI id (a container has none: "")
    made_for = tree / "var/lib/azprov/host-keys"
    assert made_for.read_text().strip() in ("", scenario["vm_id"]) and made_for.stat().st_mode & 0o077 == 0


def test_a_zero_length_host_key_is_made_again_and_sshd_loads_it(workspace, layers, keys, workdir):
    tree = image_with_keys(workspace, layers, "hostkeys-empty-key")
    (tree / "etc/azprov/azprov.toml.d").mkdir(parents=True, exist_ok=True)
    (tree / "etc/azprov/azprov.toml.d/50-keep.toml").write_text("[provisioning]\nkeep_host_keys = true\n")
    old = publics(tree)
    (tree / "etc/ssh/ssh_host_ed25519_key").write_bytes(b"")
    scenario = vm("azprov-boot-empty", "emptyadmin", keys["vm1"][1], incarnation=2)
    booted, records = boot_vm(tree, scenario, "hostkeys-empty-key", workdir, login_key=keys["vm1"][0])
    assert [r["report"]["state"] for r in reports(records)] == ["Ready"], booted.explain()
    check_ssh_login(booted, scenario)
    new = publics(tree)
    assert (tree / "etc/ssh/ssh_host_ed25519_key").stat().st_size > 0
    assert new["ed25519"] != old["ed25519"]
    assert (new["ecdsa"], new["rsa"]) == (old["ecdsa"], old["rsa"]), "sound keys were replaced"
    assert served(booted) == new, "sshd does not serve the keys on disk"
    lines = console_lines(booted)
    assert any("replacing SSH host key /etc/ssh/ssh_host_ed25519_key" in line and line.endswith(": empty")
               for line in lines), lines
    assert f"azprov: SSH host key ED25519 {fingerprint(new['ed25519'])}" in lines, lines
