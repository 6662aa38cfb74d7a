"""Host keys step: the real ``ssh-keygen -A -f ROOT`` on a scratch root."""

from __future__ import annotations

import glob
import os
import shutil
import stat

import pytest

from azprov.errors import StepFailed
from azprov.host import Host
from azprov.steps import host_keys
from support.fakes import FakeRunner, metadata

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")


@needs_ssh_keygen
def test_missing_host_keys_are_generated_in_the_image(scratch_root, config):
    host = Host(scratch_root)
    assert host_keys.missing(host) == ["rsa", "ecdsa", "ed25519"]
    assert host_keys.apply(host, metadata(), config.provisioning) is True
    assert host_keys.missing(host) == []
    for private in glob.glob(os.path.join(scratch_root, "etc/ssh/ssh_host_*_key")):
        info = os.stat(private)
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()
        assert os.path.exists(private + ".pub")
    assert host_keys.apply(host, metadata(), config.provisioning) is False


def test_present_keys_run_nothing(scratch_root, config):
    for kind in host_keys.KEY_TYPES:
        open(os.path.join(scratch_root, f"etc/ssh/ssh_host_{kind}_key"), "w").write("k")
    runner = FakeRunner()
    assert host_keys.apply(Host(scratch_root, runner=runner), metadata(), config.provisioning) is False
    assert runner.calls == []


def test_ssh_keygen_that_writes_nothing_is_a_failure(scratch_root, config):
    runner = FakeRunner()  # "succeeds" without writing, as ssh-keygen -A does when it cannot
    host = Host(scratch_root, runner=runner)
    with pytest.raises(StepFailed, match="did not create"):
        host_keys.apply(host, metadata(), config.provisioning)
    assert runner.calls == [["ssh-keygen", "-A", "-f", host.root]]


def test_no_ssh_directory_is_no_sshd(tmp_path, config):
    runner = FakeRunner()
    assert host_keys.apply(Host(str(tmp_path), runner=runner), metadata(), config.provisioning) is False
    assert runner.calls == []


def test_a_live_host_runs_plain_ssh_keygen_a(scratch_root, config):
    from support.fakes import live_host

    runner = FakeRunner()
    with pytest.raises(StepFailed):  # the fake writes nothing
        host_keys.apply(live_host(scratch_root, runner), metadata(), config.provisioning)
    assert runner.calls == [["ssh-keygen", "-A"]]


def _keygen_writing(host_root, delay=0.0, started=None):
    """A fake runner whose ssh-keygen -A writes the three keys (after ``delay`` seconds)."""
    import time

    def handler(argv):
        if argv[0] == "ssh-keygen":
            if started is not None:
                started.set()
            time.sleep(delay)
            for kind in host_keys.KEY_TYPES:
                open(os.path.join(host_root, f"etc/ssh/ssh_host_{kind}_key"), "w").write("k")
        return None

    return FakeRunner(handler)


def test_needed_only_when_keys_are_missing_and_turned_on(scratch_root, config, caplog):
    import dataclasses
    import logging

    caplog.set_level(logging.INFO)
    host = Host(scratch_root, runner=FakeRunner())
    assert host_keys.needed(host, config.provisioning) is True
    assert "step host_keys: started in the background (missing: rsa, ecdsa, ed25519)" in caplog.text
    off = dataclasses.replace(config.provisioning, generate_host_keys=False)
    assert host_keys.needed(host, off) is False
    for kind in host_keys.KEY_TYPES:
        open(os.path.join(scratch_root, f"etc/ssh/ssh_host_{kind}_key"), "w").write("k")
    assert host_keys.needed(host, config.provisioning) is False
    assert host.runner.calls == []


def test_a_killed_ssh_keygen_leaves_temp_files_that_the_next_run_removes(scratch_root, config):
    leftovers = ["ssh_host_rsa_key.AbCdEf0123", "ssh_host_rsa_key.pub.XyZ9876543"]
    for name in leftovers + ["ssh_host_rsa_key.keep"]:
        open(os.path.join(scratch_root, "etc/ssh", name), "w").write("partial")
    host = Host(scratch_root, runner=_keygen_writing(scratch_root))
    assert host_keys.apply(host, metadata(), config.provisioning) is True
    left = sorted(os.listdir(os.path.join(scratch_root, "etc/ssh")))
    assert not set(leftovers) & set(left) and "ssh_host_rsa_key.keep" in left
