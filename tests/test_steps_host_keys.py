"""Host keys step: the real ``ssh-keygen`` on a scratch root (new VM, new keys; broken keys made
again; the fingerprints shown), and the plan the flow starts it with."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import stat
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azprov.errors import StepFailed
from azprov.host import Host
from azprov.steps import host_keys
from support.fakes import FakeRunner, metadata

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
VM = "0f5e5ba6-4c41-4b0e-9f3a-9a0c4d6b2c11"
OTHER_VM = "7d3c2b1a-0000-4000-8000-00000000abcd"
KINDS = ("ed25519", "ecdsa", "rsa")


def key_file(root: str, kind: str, pub: str = "") -> str:
    return os.path.join(root, f"etc/ssh/ssh_host_{kind}_key{pub}")


def keygen_fingerprint(path: str) -> str:
    """What ``ssh-keygen -l`` says of a key file (the reference for our own fingerprints)."""
    out = subprocess.run(["ssh-keygen", "-l", "-f", path], capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def derived_public(path: str) -> str:
    """The public key ``ssh-keygen -y`` derives from a private key (fails if it cannot load it)."""
    out = subprocess.run(["ssh-keygen", "-y", "-P", "", "-f", path], capture_output=True, text=True, check=True)
    return " ".join(out.stdout.split()[:2])


def seed_image_keys(root: str) -> dict:
    """The keys a build VM left in the image (``ssh-keygen -A``): kind -> fingerprint."""
    subprocess.run(["ssh-keygen", "-A", "-f", root], check=True, capture_output=True)
    return {kind: keygen_fingerprint(key_file(root, kind, ".pub")) for kind in KINDS}


def fingerprints(root: str) -> dict:
    return {kind: keygen_fingerprint(key_file(root, kind, ".pub")) for kind in KINDS}


def assert_sound(root: str, kinds=KINDS) -> None:
    """Every key loads (ssh-keygen -y), its .pub matches it, modes and owner as sshd wants."""
    for kind in kinds:
        private = key_file(root, kind)
        info = os.lstat(private)
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()
        assert stat.S_IMODE(os.stat(private + ".pub").st_mode) == 0o644
        with open(private + ".pub") as handle:
            assert " ".join(handle.read().split()[:2]) == derived_public(private)


def apply(root: str, config, *, vm_id=VM, known_vm=False, **overrides):
    settings_ = dataclasses.replace(config.provisioning, **overrides)
    host = Host(root)
    plan = host_keys.plan(host, settings_, vm_id=vm_id, known_vm=known_vm)
    return host_keys.apply(host, metadata(), settings_, plan), plan


# --- a generalized image: the keys are made ------------------------------------------------------

def test_missing_host_keys_are_generated_and_recorded_for_the_vm(scratch_root, config):
    changed, plan = apply(scratch_root, config)
    assert changed is True and plan.replace is True
    assert_sound(scratch_root)
    with open(os.path.join(scratch_root, "var/lib/azprov/host-keys")) as handle:
        assert handle.read() == VM + "\n"
    assert not [n for n in os.listdir(os.path.join(scratch_root, "etc/ssh")) if ".azprov-keygen" in n]
    # the next run on this VM (e.g. after a failed provisioning) keeps them
    before = fingerprints(scratch_root)
    changed, plan = apply(scratch_root, config)
    assert (changed, plan.replace) == (False, False) and fingerprints(scratch_root) == before


# --- a new VM from an image that kept its keys ---------------------------------------------------

def test_a_new_vm_replaces_the_images_keys_and_logs_both_fingerprints(scratch_root, config, caplog):
    caplog.set_level(logging.INFO)
    old = seed_image_keys(scratch_root)
    changed, _ = apply(scratch_root, config)
    new = fingerprints(scratch_root)
    assert changed is True
    assert all(new[kind] != old[kind] for kind in KINDS), (old, new)
    assert_sound(scratch_root)
    for kind in KINDS:
        assert f"replacing SSH host key /etc/ssh/ssh_host_{kind}_key ({kind.upper()} {old[kind]}): a new VM" in caplog.text
        assert f"SSH host key {kind.upper()} {new[kind]}" in caplog.messages
    assert "SSH host key fingerprints of this VM (new keys); compare them when you first connect:" in caplog.messages
    # fast types first: ed25519 and ecdsa are written before RSA
    order = [m for m in caplog.messages if m.startswith("SSH host key ") and "fingerprints" not in m]
    assert [m.split()[3] for m in order] == ["ED25519", "ECDSA", "RSA"]


def test_keep_host_keys_keeps_a_sound_image_key(scratch_root, config, caplog):
    caplog.set_level(logging.INFO)
    old = seed_image_keys(scratch_root)
    changed, plan = apply(scratch_root, config, keep_host_keys=True)
    assert (changed, plan.replace) == (False, False) and fingerprints(scratch_root) == old
    assert "keep_host_keys" in caplog.text and "(kept keys)" in caplog.text


@pytest.mark.parametrize("recorded, known_vm, replaced", [
    (VM, False, False),        # keys already made for this VM (an earlier, failed, run)
    (OTHER_VM, False, True),   # made for the VM the image was captured from
    (None, True, False),       # the state says this VM is provisioned
    ("", False, True),         # made on a VM without a DMI id; this one has one
])
def test_which_vm_the_keys_were_made_for_decides(scratch_root, config, recorded, known_vm, replaced):
    old = seed_image_keys(scratch_root)
    if recorded is not None:
        os.makedirs(os.path.join(scratch_root, "var/lib/azprov"), exist_ok=True)
        with open(os.path.join(scratch_root, "var/lib/azprov/host-keys"), "w") as handle:
            handle.write(recorded.upper() + "\n")
    _, plan = apply(scratch_root, config, known_vm=known_vm)
    assert plan.replace is replaced
    assert (fingerprints(scratch_root) != old) is replaced


# --- keys sshd could not load are made again -----------------------------------------------------

def _empty(path):
    open(path, "w").close()


def _truncated(path):
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])


def _garbage(path):
    with open(path, "wb") as handle:
        handle.write(b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----\n")


def _symlink(path):
    os.remove(path)
    os.symlink("/etc/shadow", path)


def _directory(path):
    os.remove(path)
    os.mkdir(path)


def _world_readable(path):
    os.chmod(path, 0o644)


def _other_type(path):  # an RSA key where the ed25519 key should be
    shutil.copy(path.replace("ed25519", "rsa"), path)


BREAKS = {"empty": _empty, "truncated": _truncated, "garbage": _garbage, "symlink": _symlink,
          "world-readable": _world_readable, "other-type": _other_type}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_a_key_sshd_cannot_load_is_made_again_the_others_kept(scratch_root, config, caplog, name):
    caplog.set_level(logging.INFO)
    old = seed_image_keys(scratch_root)
    broken = key_file(scratch_root, "ed25519")
    BREAKS[name](broken)
    changed, plan = apply(scratch_root, config, known_vm=True)
    assert changed is True and plan.replace is False
    assert_sound(scratch_root)
    now = fingerprints(scratch_root)
    assert now["rsa"] == old["rsa"] and now["ecdsa"] == old["ecdsa"]
    assert "replacing SSH host key /etc/ssh/ssh_host_ed25519_key" in caplog.text
    if name == "symlink":
        assert not os.path.islink(broken)


def test_a_directory_where_a_key_should_be_fails_the_step(scratch_root, config):
    seed_image_keys(scratch_root)
    _directory(key_file(scratch_root, "ed25519"))
    with pytest.raises(StepFailed):
        apply(scratch_root, config, known_vm=True)


def test_an_empty_or_mismatched_public_key_is_rewritten_from_the_private_key(scratch_root, config):
    old = seed_image_keys(scratch_root)
    _empty(key_file(scratch_root, "rsa", ".pub"))
    os.remove(key_file(scratch_root, "ecdsa", ".pub"))
    shutil.copy(key_file(scratch_root, "rsa", ".pub"), key_file(scratch_root, "ed25519", ".pub"))
    changed, _ = apply(scratch_root, config, known_vm=True)
    assert changed is False  # no private key changed
    assert_sound(scratch_root)
    assert fingerprints(scratch_root) == old


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=600), st.text(max_size=400).map(str.encode)))
def test_property_whatever_the_image_holds_as_a_key_sshd_gets_a_loadable_one(tmp_path_factory, config, content):
    from support.scratch_root import make_scratch_root

    root = make_scratch_root(str(tmp_path_factory.mktemp("hk") / "root"))
    with open(os.path.join(root, "etc/ssh/sshd_config"), "a") as handle:
        handle.write("\nHostKey /etc/ssh/ssh_host_ed25519_key\n")
    path = key_file(root, "ed25519")
    with open(path, "wb") as handle:
        handle.write(content)
    os.chmod(path, 0o600)
    apply(root, config, known_vm=True)
    assert_sound(root, kinds=("ed25519",))
    assert not os.path.exists(key_file(root, "rsa")), "only the configured HostKey is made"


# --- which keys: the image's sshd configuration --------------------------------------------------

def test_hostkey_lines_decide_which_keys_are_made(scratch_root, config, caplog):
    caplog.set_level(logging.INFO)
    os.makedirs(os.path.join(scratch_root, "etc/ssh/keys"))
    with open(os.path.join(scratch_root, "etc/ssh/sshd_config"), "a") as handle:
        handle.write("\nHostKey /etc/ssh/keys/ssh_host_ecdsa_key\nHostKey /etc/ssh/ssh_host_dsa_key\n"
                     "HostKey relative_key\n")
    apply(scratch_root, config)
    made = sorted(n for n in os.listdir(os.path.join(scratch_root, "etc/ssh/keys")))
    assert made == ["ssh_host_ecdsa_key", "ssh_host_ecdsa_key.pub"]
    assert not [n for n in os.listdir(os.path.join(scratch_root, "etc/ssh")) if n.startswith("ssh_host_")]
    assert "DSA" in caplog.text and "'relative_key' is not an absolute path" in caplog.text


def test_fingerprint_is_ssh_keygens(scratch_root):
    seed_image_keys(scratch_root)
    for kind in KINDS:
        with open(key_file(scratch_root, kind, ".pub"), "rb") as handle:
            parsed = host_keys._parse_public(handle.read())
        assert host_keys.fingerprint(parsed[1]) == keygen_fingerprint(key_file(scratch_root, kind, ".pub"))


# --- failures, leftovers, the plan ---------------------------------------------------------------

def test_ssh_keygen_that_writes_nothing_is_a_failure(scratch_root, config):
    runner = FakeRunner()  # "succeeds" without writing anything
    host = Host(scratch_root, runner=runner)
    plan = host_keys.Plan(replace=True, vm_id=VM)
    with pytest.raises(StepFailed, match="did not make the ed25519 host key"):
        host_keys.apply(host, metadata(), config.provisioning, plan)
    assert runner.calls[0][:4] == ["ssh-keygen", "-q", "-t", "ed25519"]
    assert not os.path.exists(key_file(scratch_root, "ed25519"))


def test_no_ssh_directory_is_no_sshd(tmp_path, config):
    assert host_keys.plan(Host(str(tmp_path)), config.provisioning, vm_id=VM, known_vm=False) is None


def test_turned_off_plans_nothing(scratch_root, config, caplog):
    caplog.set_level(logging.INFO)
    off = dataclasses.replace(config.provisioning, generate_host_keys=False)
    assert host_keys.plan(Host(scratch_root), off, vm_id=VM, known_vm=False) is None
    assert "step host_keys: skipped (turned off in the configuration)" in caplog.text


def test_a_killed_run_leaves_temp_files_that_the_next_run_removes(scratch_root, config):
    leftovers = ["ssh_host_rsa_key.AbCdEf0123", "ssh_host_rsa_key.pub.XyZ9876543",
                 ".azprov-keygen-0123456789abcdef", ".azprov-keygen-0123456789abcdef.pub"]
    for name in leftovers + ["ssh_host_rsa_key.keep"]:
        with open(os.path.join(scratch_root, "etc/ssh", name), "w") as handle:
            handle.write("partial")
    apply(scratch_root, config)
    left = sorted(os.listdir(os.path.join(scratch_root, "etc/ssh")))
    assert not set(leftovers) & set(left) and "ssh_host_rsa_key.keep" in left


# --- sshd before the RSA key ---------------------------------------------------------------------

def test_early_comes_once_the_fast_keys_are_made_before_rsa(scratch_root, config):
    seen = []
    host = Host(scratch_root)
    plan = host_keys.Plan(replace=True, vm_id=VM)
    host_keys.apply(host, metadata(), config.provisioning, plan,
                    early=lambda: seen.append(sorted(n for n in os.listdir(os.path.join(scratch_root, "etc/ssh"))
                                                     if n.startswith("ssh_host_"))))
    assert seen == [["ssh_host_ecdsa_key", "ssh_host_ecdsa_key.pub", "ssh_host_ed25519_key",
                     "ssh_host_ed25519_key.pub"]]
    assert_sound(scratch_root)


@pytest.mark.parametrize("case", ["keygen-unit", "rsa-only", "nothing-slow"])
def test_no_early_when_sshd_could_not_start_or_another_unit_makes_rsa(scratch_root, config, case):
    if case == "keygen-unit":  # Fedora/RHEL: sshd-keygen@rsa would make the key at sshd's start
        os.makedirs(os.path.join(scratch_root, "usr/lib/systemd/system"), exist_ok=True)
        open(os.path.join(scratch_root, "usr/lib/systemd/system/sshd-keygen@.service"), "w").close()
    elif case == "rsa-only":
        with open(os.path.join(scratch_root, "etc/ssh/sshd_config"), "a") as handle:
            handle.write("\nHostKey /etc/ssh/ssh_host_rsa_key\n")
    else:  # only the ed25519 key is broken: nothing slow to wait for
        seed_image_keys(scratch_root)
        _empty(key_file(scratch_root, "ed25519"))
    seen = []
    plan = host_keys.Plan(replace=case != "nothing-slow", vm_id=VM)
    host_keys.apply(Host(scratch_root), metadata(), config.provisioning, plan, early=lambda: seen.append(1))
    assert seen == []


@pytest.mark.parametrize("version, reloads", [("OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15", False),
                                              ("OpenSSH_10.0p2 Debian-7, OpenSSL 3.5.1", True),
                                              ("OpenSSH_9.9p1, OpenSSL 3.2.2", True),
                                              ("", True)])
def test_sshd_is_reloaded_for_a_late_key_only_where_it_holds_its_keys(scratch_root, version, reloads):
    """OpenSSH 9.8+ loads host keys once in the listener: a late RSA key needs a reload; 9.2's
    per-connection sshd reads them from disk (the boot test's ssh-keyscan shows it served)."""
    from azprov.host.runner import CommandResult
    from support.fakes import live_host

    runner = FakeRunner(lambda argv: CommandResult(tuple(argv), 0, "", version) if argv[:2] == ["ssh", "-V"] else None)
    host_keys._tell_sshd(live_host(scratch_root, runner))
    reload = ["systemctl", "--no-block", "try-reload-or-restart", "ssh.service", "sshd.service"]
    assert (reload in runner.calls) is reloads
