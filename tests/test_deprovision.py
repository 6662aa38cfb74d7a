"""deprovision and status: preparing an image for capture, and saying whether it is ready."""

from __future__ import annotations

import json
import os

import pytest

from azprov import attempts, deprovision, errors, kvp, state, unit
from azprov.host import Host
from azprov import sudoers
from support import cli
from support.fakes import FakeRunner
from support.scratch_root import WANTS_LINK, diff, install_python, make_scratch_root, read_state, snapshot

OTHER_VM = "0f3c2b1a-9e8d-4c7b-a6f5-e4d3c2b1a098"


def provisioned(root, emulator, **scenario):
    fabric = emulator(scenario)
    result = cli.provision(root, fabric)
    assert result.returncode == 0, result.stderr
    return fabric


def present(root, path) -> bool:
    return os.path.lexists(os.path.join(root, path))


def fake_state(host, **changes):
    values = dict(vm_id=OTHER_VM, incarnation=1, container_id="c", instance_id="i",
                  ready_at="2024-01-01T00:00:00+00:00", admin_username="azureuser")
    values.update(changes)
    state.save(host, state.State(**values))


def test_the_plan_lists_everything_and_changes_nothing(scratch_root):
    host = Host(scratch_root, runner=FakeRunner())
    fake_state(host)
    unit.disable(host)
    open(host.path("/etc/ssh/ssh_host_ed25519_key"), "w").write("k")
    before = snapshot(scratch_root)
    actions = [a.description for a in deprovision.plan(host, state.load(host), remove_user=False)]
    assert actions[0].startswith("enable azprov.service")
    assert any(OTHER_VM in a for a in actions)
    assert any("SSH host keys (1 files" in a for a in actions)
    assert any("/var/lib/dhcp/dhclient.eth0.leases" in a for a in actions)
    assert actions[-1].startswith("empty /etc/machine-id")
    assert snapshot(scratch_root) == before


def test_a_tampered_state_cannot_remove_a_system_account(scratch_root):
    host = Host(scratch_root, runner=FakeRunner())
    fake_state(host, admin_username="root")
    with pytest.raises(errors.InvalidUsername):
        deprovision.plan(host, state.load(host), remove_user=True)
    assert host.runner.calls == []


def test_deprovision_force_on_an_image_tree(scratch_root):
    host = Host(scratch_root)
    fake_state(host)
    unit.disable(host)
    open(host.path("/etc/ssh/ssh_host_rsa_key"), "w").write("k")
    open(host.path("/etc/ssh/ssh_host_rsa_key.pub"), "w").write("k")
    recorder = attempts.Recorder(host)
    recorder.begin()
    recorder.succeeded(OTHER_VM)
    kvp.write(host, "OTHER_AGENT", "kept")
    kvp.write(host, kvp.PROVISIONING_REPORT, "result=success")
    result = cli.azprov("deprovision", "--force", "--root", scratch_root)
    assert result.returncode == 0, result.stderr
    assert "will, on " + host.root in result.stdout
    assert os.readlink(os.path.join(scratch_root, WANTS_LINK)) == "/usr/lib/systemd/system/azprov.service"
    assert read_state(scratch_root) is None
    assert not present(scratch_root, "etc/ssh/ssh_host_rsa_key")
    assert not present(scratch_root, "etc/ssh/ssh_host_rsa_key.pub")
    assert present(scratch_root, "etc/ssh/sshd_config")
    assert not present(scratch_root, "var/lib/dhcp/dhclient.eth0.leases")
    assert open(host.path("/etc/machine-id")).read() == ""
    assert attempts.load(host) == [] and not present(scratch_root, "var/lib/azprov/attempts.json")
    assert kvp.read_pool(host) == [("OTHER_AGENT", "kept")]
    again = cli.azprov("deprovision", "--force", "--root", scratch_root)  # nothing left to do: fine
    assert again.returncode == 0, again.stderr


def test_deprovision_resets_the_build_vms_host_name_to_localhost(scratch_root):
    """The captured image must not carry the build VM's name: every VM from it would send that
    name in its first DHCP requests.  --json says which name was replaced."""
    with open(os.path.join(scratch_root, "etc/hostname"), "w") as handle:
        handle.write("Build-VM-7\n")
    result = cli.azprov("deprovision", "--force", "--json", "--root", scratch_root)
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout)
    assert done["hostname_reset"] == "build-vm-7"
    assert any("reset the host name build-vm-7 in /etc/hostname to localhost" in d for d in done["done"])
    assert open(os.path.join(scratch_root, "etc/hostname")).read() == "localhost\n"
    assert oct(os.stat(os.path.join(scratch_root, "etc/hostname")).st_mode & 0o777) == "0o644"
    again = json.loads(cli.azprov("deprovision", "--force", "--json", "--root", scratch_root).stdout)
    assert again["hostname_reset"] is None and not any("host name" in d for d in again["done"])


@pytest.mark.parametrize("text", ["localhost\n", "", "localhost.localdomain\n", "# comment only\n"])
def test_a_neutral_host_name_is_left_alone(scratch_root, text):
    with open(os.path.join(scratch_root, "etc/hostname"), "w") as handle:
        handle.write(text)
    host = Host(scratch_root, runner=FakeRunner())
    actions = deprovision.plan(host, state.load(host), remove_user=False)
    assert not any(a.hostname_reset for a in actions)


def test_a_linked_hostname_file_is_refused_not_followed(scratch_root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.write_text("keep\n")
    path = os.path.join(scratch_root, "etc/hostname")
    os.remove(path)
    os.symlink(str(outside), path)
    host = Host(scratch_root, runner=FakeRunner())
    actions = deprovision.plan(host, state.load(host), remove_user=False)
    reset = [a for a in actions if a.hostname_reset]
    if reset:  # read through the link or not, writing through it is refused
        with pytest.raises(errors.AzprovError):
            reset[0].run()
    assert outside.read_text() == "keep\n"


def test_without_a_terminal_or_force_it_refuses(scratch_root):
    before = snapshot(scratch_root)
    result = cli.azprov("deprovision", "--root", scratch_root)
    assert result.returncode == 2
    assert "--force" in result.stderr.strip().splitlines()[-1]
    assert set(diff(before, snapshot(scratch_root))) <= {"run/azprov", "run/azprov/lock"}


@pytest.mark.parametrize("answer, code", [("n\n", 1), ("\n", 1), ("y\n", 0)])
def test_on_a_terminal_it_asks(scratch_root, answer, code):
    import subprocess

    host = Host(scratch_root)
    fake_state(host)
    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen(cli.command("deprovision", "--root", scratch_root), stdin=terminal,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=cli.environment())
        os.write(controller, answer.encode())
        out, err = process.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert process.returncode == code, err
    assert (read_state(scratch_root) is None) == (code == 0)
    if code:
        assert "nothing was changed" in out


@pytest.mark.emulator
@cli.requires_root
def test_deprovision_user_then_a_new_vm_provisions_again(scratch_root, emulator):
    provisioned(scratch_root, emulator, admin_username="alice")
    host = Host(scratch_root)
    assert host.accounts.user("alice") is not None
    result = cli.azprov("deprovision", "--user", "--force", "--root", scratch_root)
    assert result.returncode == 0, result.stderr
    assert host.accounts.user("alice") is None and host.accounts.group("alice") is None
    assert not present(scratch_root, "home/alice")
    assert not present(scratch_root, "etc/sudoers.d/90-azprov")
    assert "alice" not in host.accounts.group("sudo").members

    fabric = emulator({"vm_id": OTHER_VM, "computer_name": "second", "admin_username": "bob",
                       "incarnation": 2})
    again = cli.provision(scratch_root, fabric)
    assert again.returncode == 0, again.stderr
    assert [r["state"] for r in fabric.reports] == ["Ready"]
    recorded = read_state(scratch_root)
    assert (recorded["vm_id"], recorded["admin_username"], recorded["incarnation"]) == (OTHER_VM, "bob", 2)
    assert open(os.path.join(scratch_root, "etc/hostname")).read() == "second\n"
    assert sudoers.users(open(os.path.join(scratch_root, "etc/sudoers.d/90-azprov")).read()) == ["bob"]
    assert present(scratch_root, "etc/ssh/ssh_host_ed25519_key")


@pytest.mark.emulator
@cli.requires_root
def test_without_user_the_admin_user_and_its_sudo_rights_stay(scratch_root, emulator):
    provisioned(scratch_root, emulator)
    assert cli.azprov("deprovision", "--force", "--root", scratch_root).returncode == 0
    host = Host(scratch_root)
    assert host.accounts.user("azureuser") is not None
    assert sudoers.users(open(host.path(sudoers.DROPIN)).read()) == ["azureuser"]


@pytest.mark.emulator
@cli.requires_root
def test_status_says_what_check_finds_until_deprovisioned(tmp_path, emulator):
    """status's "ready for capture" is check's verdict (issue 11: it said yes for images check fails)."""
    root = install_python(make_scratch_root(str(tmp_path / "image")))

    def verdicts():
        data = json.loads(cli.azprov("status", "--json", "--root", root).stdout)
        checked = cli.azprov("check", "--root", root, "--json")
        assert data["ready_for_capture"] == (checked.returncode == 0), checked.stdout
        assert data["capture_problems"] == json.loads(checked.stdout)["problems"]
        return data

    fresh = verdicts()  # never provisioned, yet the tree carries a machine id and a lease
    assert fresh["provisioned"] is False and fresh["unit_enabled"] and not fresh["ready_for_capture"]
    assert {p["check"] for p in fresh["capture_problems"]} == {"machine_id", "leases"}

    provisioned(root, emulator)
    result = cli.azprov("status", "--root", root)
    assert result.returncode == 0, result.stderr
    assert "provisioned: yes, VM 8b1e4c3d-52a7-4f6e-9c80-d3a2b7e615f4" in result.stdout
    assert "azprov.service: disabled" in result.stdout
    assert "ready for capture: no (" in result.stdout and "fix: sudo azprov deprovision --force" in result.stdout
    data = verdicts()
    assert data["unit_enabled"] is False and data["admin_username"] == "azureuser"
    assert {p["check"] for p in data["capture_problems"]} >= {"unit", "state", "host_keys", "admin_user"}

    cli.azprov("deprovision", "--force", "--root", root)  # keeps the admin user: still not ready
    assert [p["check"] for p in verdicts()["capture_problems"]] == ["admin_user"]
    cli.azprov("deprovision", "--user", "--force", "--root", root)
    data = verdicts()
    assert data["ready_for_capture"] is True and data["warnings"] == []
    assert "ready for capture: yes" in cli.azprov("status", "--root", root).stdout


def test_other_agents_temporary_disk_lines_leave_fstab(scratch_root):
    """cloud-init's /mnt line (and its swap line) go at capture; the rest of fstab, its mode, stays."""
    fstab = os.path.join(scratch_root, "etc/fstab")
    root_line = "UUID=0b58668a-ba2e-4a00-b89a-3354b7a547d4 / ext4 defaults 0 1\n"
    data_line = "/dev/disk/azure/scsi1/lun0-part1 /data xfs defaults,nofail 0 2\n"
    with open(fstab, "w") as handle:
        handle.write(root_line + "/dev/disk/cloud/azure_resource-part1\t/mnt\tauto\tdefaults,nofail,"
                     "x-systemd.after=cloud-init.service,_netdev,comment=cloudconfig\t0\t2\n" + data_line)
    os.chmod(fstab, 0o644)
    result = cli.azprov("deprovision", "--force", "--json", "--root", scratch_root)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["edited_files"] == ["/etc/fstab"]
    assert any("comment=cloudconfig" in done and "cloud-init" in done for done in report["done"])
    assert open(fstab).read() == root_line + data_line
    assert os.stat(fstab).st_mode & 0o7777 == 0o644
    again = json.loads(cli.azprov("deprovision", "--force", "--json", "--root", scratch_root).stdout)
    assert again["edited_files"] == []


def _root_shadow(root: str, field: str) -> None:
    path = os.path.join(root, "etc/shadow")
    lines = [f"root:{field}:19500:0:99999:7:::" if line.startswith("root:") else line
             for line in open(path).read().splitlines()]
    open(path, "w").write("\n".join(lines) + "\n")


def _root_field(root: str) -> str:
    return next(line.split(":")[1] for line in open(os.path.join(root, "etc/shadow")) if line.startswith("root:"))


@cli.requires_root
@pytest.mark.parametrize("field, locked", [("$6$salt$hash", "!$6$salt$hash"), ("", "!")])
def test_deprovision_locks_roots_password_and_keeps_its_keys(scratch_root, field, locked):
    """The real usermod -L --root: the hash stays behind '!' (usermod -U gives it back)."""
    _root_shadow(scratch_root, field)
    os.makedirs(os.path.join(scratch_root, "root/.ssh"), 0o700)
    keys = os.path.join(scratch_root, "root/.ssh/authorized_keys")
    open(keys, "w").write("ssh-ed25519 AAAA operator\n")
    passwd = open(os.path.join(scratch_root, "etc/passwd")).read()
    result = cli.azprov("deprovision", "--force", "--json", "--root", scratch_root)
    assert result.returncode == 0, result.stderr
    assert "lock root's password (usermod -L root; its account and SSH keys stay)" in json.loads(result.stdout)["done"]
    assert _root_field(scratch_root) == locked
    assert open(keys).read() == "ssh-ed25519 AAAA operator\n"
    assert open(os.path.join(scratch_root, "etc/passwd")).read() == passwd  # account and shell as they were
    assert cli.azprov("check", "--json", "--root", scratch_root).stdout.count("root has") == 0


@cli.requires_root
def test_deprovision_keeps_roots_password_when_configured_to(scratch_root):
    _root_shadow(scratch_root, "$6$salt$hash")
    os.makedirs(os.path.join(scratch_root, "etc/azprov"), exist_ok=True)
    open(os.path.join(scratch_root, "etc/azprov/azprov.toml"), "w").write("[deprovision]\nlock_root_password = false\n")
    result = cli.azprov("deprovision", "--force", "--root", scratch_root)
    assert result.returncode == 0, result.stderr
    assert "lock root" not in result.stdout
    assert _root_field(scratch_root) == "$6$salt$hash"
