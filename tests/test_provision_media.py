"""The provisioning flow with the provisioning disc: password, custom data, user data, which
source wins, the failures that must be loud.  The disc is a real image (genisoimage) at
``/dev/sr0`` of a scratch tree; the user and password are set with the real useradd and chpasswd
(``-R``) in that tree, so these tests need root."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import stat

import pytest

from azprov import errors, provisioning_data, state
from azprov.errors import FabricUnreachable
from azprov.host import Host
from azprov.provision import provision
from support.reports import read_fields
from support import cli, discs
from support.fakes import ED25519, VM_ID, FakeFabric, FakeRunner, live_host, metadata

PASSWORD = "Disc-Passw0rd!"
pytestmark = cli.requires_root


@pytest.fixture
def full(config):
    """Every step but host keys (ssh-keygen is slow and unrelated)."""
    return dataclasses.replace(config, provisioning=dataclasses.replace(
        config.provisioning, generate_host_keys=False))


def with_disc(host: Host, tmp_path, **ovf) -> None:
    os.makedirs(host.path("/dev"), exist_ok=True)
    image = discs.genisoimage(tmp_path, discs.ovf_env(**ovf), "-udf")
    shutil.copy(image, host.path("/dev/sr0"))


def fields(report) -> dict:
    return dict(read_fields(report.description))


def everything_under(root: str) -> bytes:
    data = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path) and os.path.isfile(path) and not path.startswith(os.path.join(root, "dev")):
                with open(path, "rb") as handle:
                    data.append(handle.read())
    return b"\0".join(data)


def test_a_password_vm_gets_its_password_custom_data_and_sudo_asks(scratch_root, tmp_path, full, caplog):
    host = Host(scratch_root)
    with_disc(host, tmp_path, username="azureuser", hostname="vm1")
    imds = dataclasses.replace(metadata(keys=(), disable_password_authentication=False),
                               has_custom_data=True, user_data=b"user data\n")
    fabric = FakeFabric(imds)
    with caplog.at_level(logging.DEBUG):
        outcome = provision(host, full, connect=fabric.connect)
    assert outcome.status == "provisioned" and outcome.changes["password"] is True
    assert fabric.reports[-1].substatus is None or fabric.reports[-1].state == "Ready"
    shadow = host.accounts.password_field("azureuser")
    assert shadow.startswith("$6$"), shadow  # set by chpasswd -R ... -c SHA512, not locked
    crypt = pytest.importorskip("crypt")
    assert crypt.crypt(PASSWORD, shadow) == shadow
    sudoers = open(host.path("/etc/sudoers.d/90-azprov")).read()
    assert "azureuser ALL=(ALL) PASSWD:ALL" in sudoers and "NOPASSWD" not in sudoers
    assert "PasswordAuthentication yes" in open(host.path("/etc/ssh/sshd_config.d/10-azprov.conf")).read()
    for path, content in ((provisioning_data.CUSTOM_DATA, b"#!/bin/sh\necho hello\n"),
                          (provisioning_data.USER_DATA, b"user data\n")):
        info = os.lstat(host.path(path))
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, 0), path
        assert open(host.path(path), "rb").read() == content
    assert stat.S_IMODE(os.lstat(host.path("/var/lib/azprov")).st_mode) == 0o700
    saved = open(host.path(provisioning_data.OVF_COPY), "rb").read()
    assert b"redacted" in saved and b"vm1" in saved
    # the plaintext password is nowhere: not in the tree, the state, the log or a report
    assert PASSWORD.encode() not in everything_under(scratch_root)
    assert PASSWORD not in caplog.text
    assert all(PASSWORD not in (r.description or "") for r in fabric.reports)


def test_a_password_vm_without_a_disc_fails_loudly(scratch_root, full):
    host = Host(scratch_root)
    fabric = FakeFabric(metadata(keys=(), disable_password_authentication=False))
    with pytest.raises(errors.NoWayToLogIn) as caught:
        provision(host, full, connect=fabric.connect)
    assert caught.value.exit_code == 6
    (report,) = fabric.reports
    assert report.substatus.value == "ProvisioningFailed"
    got = fields(report)
    assert (got["reason"], got["step"]) == ("no_way_to_log_in", "checks")
    assert "no password was found" in got["message"]
    assert host.accounts.user("azureuser") is None and state.load(host) is None


def test_a_key_only_vm_without_a_key_fails_loudly(scratch_root, full):
    fabric = FakeFabric(metadata(keys=()))
    with pytest.raises(errors.NoWayToLogIn, match="SSH key login only"):
        provision(Host(scratch_root), full, connect=fabric.connect)


def test_a_password_over_72_characters_is_its_own_failure(scratch_root, tmp_path, full):
    host = Host(scratch_root)
    with_disc(host, tmp_path, password="x" * 73)
    fabric = FakeFabric(metadata(keys=(), disable_password_authentication=False))
    with pytest.raises(errors.PasswordTooLong):
        provision(host, full, connect=fabric.connect)
    got = fields(fabric.reports[0])
    assert (got["reason"], got["step"]) == ("password_too_long", "password")
    assert host.accounts.user("azureuser") is None


def test_imds_wins_for_hostname_user_and_keys_and_disagreements_are_logged(scratch_root, tmp_path, full, caplog):
    host = Host(scratch_root)
    with_disc(host, tmp_path, hostname="disc-name", username="discuser")
    fabric = FakeFabric(metadata(computer_name="imds-name", admin_username="azureuser"))
    provision(host, full, connect=fabric.connect)
    assert open(host.path("/etc/hostname")).read() == "imds-name\n"
    assert host.accounts.user("azureuser") is not None and host.accounts.user("discuser") is None
    assert "disagree on the hostname ('imds-name' and 'disc-name')" in caplog.text
    assert "disagree on the admin user" in caplog.text


def test_without_imds_the_disc_alone_provisions(scratch_root, tmp_path, full, caplog):
    host = Host(scratch_root)
    os.makedirs(host.path("/sys/class/dmi/id"))
    open(host.path("/sys/class/dmi/id/product_uuid"), "w").write(VM_ID.upper() + "\n")
    os.makedirs(host.path("/sys/firmware/efi"))
    with_disc(host, tmp_path, hostname="from-disc", username="discuser", keys=(("FP", ED25519),))
    fabric = FakeFabric(metadata())
    fabric.imds_error = FabricUnreachable("IMDS did not answer")
    outcome = provision(host, full, connect=fabric.connect)
    assert outcome.status == "provisioned" and outcome.vm_id == VM_ID
    assert open(host.path("/etc/hostname")).read() == "from-disc\n"
    assert open(host.path("/home/discuser/.ssh/authorized_keys")).read() == ED25519 + "\n"
    assert "provisioning from the provisioning disc alone" in caplog.text


def test_a_pool_vm_on_the_disc_is_refused(scratch_root, tmp_path, full):
    host = Host(scratch_root)
    with_disc(host, tmp_path, platform="<PreprovisionedVm>true</PreprovisionedVm>"
                                       "<PreprovisionedVMType>Savable</PreprovisionedVMType>")
    fabric = FakeFabric(metadata())
    with pytest.raises(errors.PoolVm):
        provision(host, full, connect=fabric.connect)
    assert fields(fabric.reports[0])["reason"] == "pre_provisioned_pool_vm"


def test_custom_data_imds_promised_but_no_disc_fails_or_warns(scratch_root, full, caplog):
    host = Host(scratch_root)
    fabric = FakeFabric(dataclasses.replace(metadata(), has_custom_data=True))
    with pytest.raises(errors.CustomDataMissing):
        provision(host, full, connect=fabric.connect)
    assert fields(fabric.reports[0])["reason"] == "custom_data_missing"
    warn = dataclasses.replace(full, custom_data=dataclasses.replace(full.custom_data, on_missing="warn"))
    assert provision(host, warn, connect=fabric.connect).status == "provisioned"
    assert "no provisioning disc carried it; going ahead" in caplog.text


def test_a_garbled_ovf_env_is_reported(scratch_root, tmp_path, full):
    host = Host(scratch_root)
    with_disc(host, tmp_path, custom_data="@@not base64@@")
    fabric = FakeFabric(metadata())
    with pytest.raises(errors.InvalidOvfEnv):
        provision(host, full, connect=fabric.connect)
    got = fields(fabric.reports[0])
    assert (got["reason"], got["step"]) == ("invalid_ovf_env", "media")


def test_custom_data_script_runs_after_ready_in_its_own_unit_only_when_asked(scratch_root):
    runner = FakeRunner()
    host = live_host(scratch_root, runner)
    assert provisioning_data.run_custom_data(host, b"#!/bin/sh\necho hi\n", enabled=False) is False
    assert provisioning_data.run_custom_data(host, b"not a script", enabled=True) is False
    assert runner.calls == []
    assert provisioning_data.run_custom_data(host, b"#!/bin/sh\necho hi\n", enabled=True) is True
    (argv,) = runner.calls
    assert argv[0] == "systemd-run" and "--unit=azprov-custom-data" in argv and "--no-block" in argv
    assert argv[-1] == provisioning_data.RUN_COPY
    info = os.lstat(host.path(provisioning_data.RUN_COPY))
    assert stat.S_IMODE(info.st_mode) == 0o700


def test_chpasswd_gets_the_password_on_stdin_only(scratch_root):
    seen = []

    def record(argv, timeout, input):
        seen.append((list(argv), input))
        from azprov.host import CommandResult
        return CommandResult(tuple(argv), 0, "", "")

    host = live_host(scratch_root, FakeRunner())
    host.runner = record
    from azprov.steps import password as password_step
    meta = dataclasses.replace(metadata(), password=PASSWORD)
    os.makedirs(host.path("/etc"), exist_ok=True)
    assert password_step.apply(host, meta, None) is True
    ((argv, stdin),) = seen
    assert argv == ["chpasswd"] and stdin == f"azureuser:{PASSWORD}\n"
    assert all(PASSWORD not in arg for arg in argv)


@pytest.mark.emulator
def test_end_to_end_the_emulators_disc_and_imds_then_status_and_deprovision(scratch_root, emulator, tmp_path):
    """The real CLI: ``azprov fabric disc`` writes the scenario's disc (ISO9660) into the tree as
    /dev/sr0, ``azprov provision`` reads it and the emulator's IMDS (userData, hasCustomData),
    ``status`` reports the custom data, ``deprovision`` removes what was stored."""
    import json

    scenario = {"computer_name": "pw-vm", "admin_username": "alice", "admin_password": PASSWORD,
                "public_keys": [], "custom_data": "#!/bin/sh\necho hi\n", "user_data": "some user data"}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    os.makedirs(os.path.join(scratch_root, "dev"), exist_ok=True)
    made = cli.azprov("fabric", "disc", "--scenario", str(path), "--output",
                      os.path.join(scratch_root, "dev/sr0"))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(os.lstat(os.path.join(scratch_root, "dev/sr0")).st_mode) == 0o600
    fabric = emulator(scenario)
    result = cli.provision(scratch_root, fabric)
    assert result.returncode == 0, result.stderr
    assert "from /dev/sr0 (iso9660)" in result.stderr and PASSWORD not in result.stderr
    assert [r["state"] for r in fabric.reports] == ["Ready"]
    host = Host(scratch_root)
    assert host.accounts.password_field("alice").startswith("$6$")
    assert open(host.path(provisioning_data.CUSTOM_DATA)).read() == "#!/bin/sh\necho hi\n"
    assert open(host.path(provisioning_data.USER_DATA)).read() == "some user data"
    status = json.loads(cli.azprov("status", "--json", "--root", scratch_root).stdout)
    assert status["custom_data"] is True and status["user_data"] is True
    assert "custom data (/var/lib/azprov/custom-data)" in cli.azprov("status", "--root", scratch_root).stdout
    os.unlink(host.path("/dev/sr0"))  # the disc holds the password; the image tree must not
    assert PASSWORD.encode() not in everything_under(scratch_root)
    gone = cli.azprov("deprovision", "--force", "--root", scratch_root)
    assert gone.returncode == 0, gone.stderr
    for saved in provisioning_data.SAVED:
        assert not host.lexists(saved), saved


def dmi_vm_id(host: Host) -> None:
    os.makedirs(host.path("/sys/class/dmi/id"))
    with open(host.path("/sys/class/dmi/id/product_uuid"), "w") as handle:
        handle.write(VM_ID.upper() + "\n")
    os.makedirs(host.path("/sys/firmware/efi"))  # Gen2: the id is not byte-swapped


def grace_config(tmp_path, seconds: float) -> str:
    path = tmp_path / "grace.toml"
    path.write_text(f"[imds]\ndisc_grace = {seconds}\n")
    return str(path)


@pytest.mark.emulator
def test_imds_down_and_a_complete_disc_provisions_after_the_grace_not_the_deadline(scratch_root, emulator, tmp_path):
    """IMDS refuses every connection (real HTTP on loopback: nothing listens on its port): the
    disc has a host name, a user and a key, so after ``[imds] disc_grace`` (2 s here) azprov goes
    on with the disc and reports Ready, instead of waiting out IMDS's deadline (20 s here)."""
    import time

    host = Host(scratch_root)
    dmi_vm_id(host)
    with_disc(host, tmp_path, hostname="from-disc", username="discuser", password="", keys=(("FP", ED25519),))
    fabric = emulator({"computer_name": "imds-name", "imds": {"refuse_for": 3600}})
    started = time.monotonic()
    result = cli.provision(scratch_root, fabric, "--config", grace_config(tmp_path, 2))
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "IMDS was not reached within 2 s ([imds] disc_grace): provisioning from the provisioning disc" \
        in result.stderr
    assert "connection refused" in result.stderr  # IMDS really was tried, over TCP
    assert elapsed < 12, f"{elapsed:.1f} s: waited for IMDS's deadline, not the grace"
    assert [r["state"] for r in fabric.reports] == ["Ready"]
    assert open(host.path("/etc/hostname")).read() == "from-disc\n"
    assert open(host.path("/home/discuser/.ssh/authorized_keys")).read() == ED25519 + "\n"
    assert state.load(host).vm_id == VM_ID
    # IMDS's retries stop once azprov goes on: at most the attempt in flight ends, no new one
    after = result.stderr.split("IMDS was not reached within", 1)[1].splitlines()
    assert not [line for line in after if "IMDS instance metadata" in line and "retrying in" in line], after


@pytest.mark.emulator
@pytest.mark.parametrize("disc", ["complete", "no_key"])
def test_imds_answering_within_the_grace_still_wins_and_an_incomplete_disc_waits_for_it(
        scratch_root, emulator, tmp_path, caplog, disc):
    """IMDS refuses connections for its first 2 s, then answers.  With a complete disc and a 10 s
    grace, IMDS's answer is used (it wins where the disc disagrees).  A disc without a key (no way
    to log in from the disc alone) gives IMDS more than the grace: its whole deadline."""
    host = Host(scratch_root)
    dmi_vm_id(host)
    keys = (("FP", ED25519),) if disc == "complete" else ()
    with_disc(host, tmp_path, hostname="from-disc", username="azureuser", password="", keys=keys,
              disable_password_auth="true")
    fabric = emulator({"computer_name": "imds-name", "imds": {"refuse_for": 2}})
    grace = 10 if disc == "complete" else 0.5
    result = cli.provision(scratch_root, fabric, "--config", grace_config(tmp_path, grace))
    assert result.returncode == 0, result.stderr
    assert "provisioning from the provisioning disc alone" not in result.stderr
    assert ("waiting up to" in result.stderr) == (disc == "complete")
    assert "disagree on the hostname ('imds-name' and 'from-disc'): using IMDS's" in result.stderr
    assert open(host.path("/etc/hostname")).read() == "imds-name\n"
    assert [r["state"] for r in fabric.reports] == ["Ready"]


def test_a_requested_password_the_disc_lacks_is_a_warning_in_the_log_and_the_record(scratch_root, tmp_path, full, caplog):
    """Password login requested, keys given, a real disc without UserPassword: Ready (the keys
    work), the account locked, sudo without password, and a warning saying so where people look."""
    from azprov import attempts

    host = Host(scratch_root)
    with_disc(host, tmp_path, username="azureuser", hostname="vm1", password="")
    fabric = FakeFabric(metadata(disable_password_authentication=False))
    with caplog.at_level(logging.WARNING):
        outcome = provision(host, full, connect=fabric.connect)
    assert outcome.status == "provisioned" and [r.state for r in fabric.reports] == ["Ready"]
    expected = ("password login was requested (disablePasswordAuthentication is false) but no password was "
                "set for azureuser: the provisioning disc carries no UserPassword")
    assert expected in caplog.text and "sudo passwd azureuser" in caplog.text
    last = attempts.last(host)
    assert last.outcome == "succeeded" and len(last.warnings) == 1 and last.warnings[0].startswith(expected)
    assert host.accounts.password_field("azureuser").startswith("!")
    assert "azureuser ALL=(ALL) NOPASSWD:ALL" in open(host.path("/etc/sudoers.d/90-azprov")).read()
    status = cli.azprov("status", "--root", scratch_root)
    assert f"warning: {expected}" in status.stdout, status.stdout


def test_a_key_only_vm_gets_no_password_warning(scratch_root, full, caplog):
    host = Host(scratch_root)
    provision(host, full, connect=FakeFabric(metadata()).connect)
    assert "password login was requested" not in caplog.text and attempts_warnings(host) == ()


def attempts_warnings(host):
    from azprov import attempts

    return attempts.last(host).warnings
