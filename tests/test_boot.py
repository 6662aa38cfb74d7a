"""Boot tests: a real Debian 12 image, real systemd as PID 1, the real .deb.

``make deb`` builds the package; it is installed with ``dpkg -i`` into a Debian 12 root made by
mmdebstrap (cached in ``.cache/boot/``), which is then booted with ``systemd-nspawn -b`` inside a
private network namespace where ``azprov fabric serve`` answers at 168.63.129.16:80 and
169.254.169.254:80.  The image runs the stock unit with the stock configuration (no override):
it finds the fabric at its real addresses.  A test-only unit (tests/boot/units/) records what the
running system says after azprov and sshd, then powers off; everything is checked from outside:
the emulator's request log, the image's files, its persistent journal.

Each scenario boots its own overlayfs tree over the image's read-only layers.  The first VM is booted three times in a row
(provision, reboot, deprovision + boot as a new VM); the failure scenarios boot fresh copies.

Needs root.  ``AZPROV_BOOT_KEEP=1`` keeps the logs and each tree's upper directory (what the
boots changed, their journal included) under ``.cache/boot/runs/``;
``AZPROV_BOOT_DEB=FILE`` boots that package instead of building one; ``AZPROV_BOOT_TIMEOUT``
(seconds, default 120) bounds each boot.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from tests.boot import image as images
from tests.boot import nspawn, timing
from tests.boot.disc import provisioning_disc
from tests.boot.fabric import boot_with_fabric

pytestmark = pytest.mark.boot

REPO = images.REPO
UNIT = "azprov.service"
STATE = "var/lib/azprov/state.json"
# systemd's own catalog messages: "Starting UNIT...", "Started UNIT."
SD_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"
SD_STARTED = "39f53479d3a045ac8e11786248231fbf"
HOSTILE_NAMES = ["bad_name!", "../x"]


def vm(name: str, user: str, key: str, incarnation: int) -> dict:
    """A scenario for the emulator: one VM with its own ids, name, admin user and key."""
    return {
        "description": f"boot test: {name}",
        "vm_id": str(uuid.uuid4()),
        "vm_name": f"{name}-resource",
        "computer_name": name,
        "admin_username": user,
        "incarnation": incarnation,
        "container_id": str(uuid.uuid4()),
        "instance_id": f"{uuid.uuid4()}._{name}-resource",
        "public_keys": [key],
    }


# --- set-up ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace():
    if os.geteuid() != 0:
        pytest.skip("boot tests need root (network namespaces, systemd-nspawn, overlay mounts, dpkg in an image)")
    problem = images.install_tools()
    if problem:
        pytest.skip(f"boot tests need mmdebstrap and systemd-nspawn: {problem}")
    workspace = images.Workspace(keep=os.environ.get("AZPROV_BOOT_KEEP") == "1")
    try:
        yield workspace
    finally:
        workspace.close()
        if workspace.keep:
            print(f"\nboot tests: kept {workspace.path}")


@pytest.fixture(scope="module")
def workdir(workspace) -> Path:
    return workspace.path


@pytest.fixture(scope="module")
def layers(workspace) -> List[Path]:
    """The bootable image every scenario starts from: base tree + the .deb + the recorder unit
    (read-only layers, top first)."""
    given = os.environ.get("AZPROV_BOOT_DEB")
    deb = Path(given) if given else images.build_deb(workspace.path / "dist")
    return images.make_image(workspace, images.base_tree(), deb)


@pytest.fixture(scope="module")
def image(workspace, layers) -> Path:
    """An untouched tree of the image, for looking at it before any boot."""
    return workspace.overlay(layers, "pristine").root


@pytest.fixture(scope="module")
def keys(workdir: Path) -> Dict[str, Tuple[Path, str]]:
    """Two fresh ed25519 key pairs: name -> (private key file, public key line)."""
    found = {}
    for name in ("vm1", "vm2"):
        private = workdir / "keys" / name
        private.parent.mkdir(exist_ok=True)
        images.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"boot-test-{name}", "-f", str(private)])
        found[name] = (private, private.with_suffix(".pub").read_text().strip())
    return found


def boot_vm(tree: Path, scenario: dict, label: str, workdir: Path,
            login_key: Path = None, nspawn_args=()) -> Tuple[nspawn.Boot, List[dict]]:
    """Boot ``tree`` once with the emulator serving ``scenario``; returns the boot and every
    request the emulator saw during it.  With ``login_key``, the recorder also logs in over
    SSH as the scenario's admin user with that key."""
    recorder = tree / images.RECORDER_DIR
    for name in ("login-key", "login-user"):
        (recorder / name).unlink(missing_ok=True)
    if login_key is not None:
        (recorder / "login-key").write_bytes(login_key.read_bytes())
        os.chmod(recorder / "login-key", 0o600)
        (recorder / "login-user").write_text(scenario["admin_username"] + "\n")
    return boot_with_fabric(tree, scenario, workdir, label, nspawn_args)


def reports(records: List[dict]) -> List[dict]:
    return [r for r in records if r.get("endpoint") == "health" and "report" in r]


def kvp_reports(tree: Path) -> List[str]:
    """The values of the PROVISIONING_REPORT records in the tree's KVP guest pool."""
    from azprov import kvp

    pool = tree / kvp.POOL_FILE.lstrip("/")
    assert pool.exists(), "no KVP pool written"
    return [value for key, value in kvp.parse_pool(pool.read_bytes()) if key == kvp.PROVISIONING_REPORT]


def console_lines(booted: nspawn.Boot) -> List[str]:
    """azprov's lines on the console (what Azure boot diagnostics shows)."""
    return [line.strip() for line in booted.console.replace("\r", "").splitlines()
            if line.strip().startswith("azprov: ")]


def check_journal_once(booted: nspawn.Boot) -> None:
    """azprov logged natively (structured) and not also through stdout/stderr: each message is
    in the journal once; and every console line is one of those journal messages."""
    own = booted.entries(_SYSTEMD_UNIT=UNIT)
    streamed = [e.get("MESSAGE") for e in own if e.get("_TRANSPORT") == "stdout"]
    assert streamed == [], f"logged twice (also through stdout/stderr): {streamed}"
    native = {e.get("MESSAGE") for e in own if e.get("_TRANSPORT") == "journal"}
    for line in console_lines(booted):
        text = line[len("azprov: "):]
        for level in ("warning: ", "error: "):
            text = text[len(level):] if text.startswith(level) else text
        assert text in native, f"console line not in the journal: {line}"


# --- the first VM: provision, reboot, deprovision and boot as another VM ----------------------

@pytest.fixture(scope="module")
def vm1(keys) -> dict:
    return vm("azprov-boot-one", "bootadmin", keys["vm1"][1], incarnation=3)


@pytest.fixture(scope="module")
def vm2(keys) -> dict:
    return vm("azprov-boot-two", "secondadmin", keys["vm2"][1], incarnation=7)


PLANTED_SUDO = "ALL ALL=(ALL) NOPASSWD:ALL"
IMAGE_ROOT_HASH = "$6$imagesalt$imagehash"


@pytest.fixture(scope="module")
def vm1_tree(workspace, layers) -> Path:
    """The image, as a hostile builder left it: a rule for every account planted in azprov's own
    sudoers drop-in, and a root password every VM would share."""
    tree = workspace.overlay(layers, "vm1").root
    dropin = tree / "etc/sudoers.d/90-azprov"
    dropin.write_text(PLANTED_SUDO + "\n")
    os.chmod(dropin, 0o440)
    shadow = tree / "etc/shadow"
    info = os.stat(shadow)
    lines = [f"root:{IMAGE_ROOT_HASH}:" + line.split(":", 2)[2] if line.startswith("root:") else line
             for line in shadow.read_text().splitlines()]
    shadow.write_text("\n".join(lines) + "\n")
    os.chown(shadow, info.st_uid, info.st_gid)
    os.chmod(shadow, stat.S_IMODE(info.st_mode))
    return tree


@pytest.fixture(scope="module")
def first_boot(vm1_tree: Path, vm1: dict, keys, workdir: Path):
    return boot_vm(vm1_tree, vm1, "vm1-boot1", workdir, login_key=keys["vm1"][0])


@pytest.fixture(scope="module")
def second_boot(first_boot, vm1_tree: Path, vm1: dict, workdir: Path):
    return boot_vm(vm1_tree, vm1, "vm1-boot2", workdir)


@pytest.fixture(scope="module")
def deprovisioned(second_boot, vm1_tree: Path) -> Tuple[subprocess.CompletedProcess, dict]:
    """``azprov deprovision --force`` run in the tree (not booted), and what it left there."""
    result = nspawn.run_in(vm1_tree, ["azprov", "deprovision", "--force"])
    machine_id = vm1_tree / "etc/machine-id"
    left = {
        "enabled": os.path.islink(images.enable_link(vm1_tree, UNIT)),
        "state": (vm1_tree / STATE).exists(),
        "host_keys": sorted(p.name for p in (vm1_tree / "etc/ssh").glob("ssh_host_*")),
        "machine_id": machine_id.read_text().strip() if machine_id.exists() else None,
    }
    return result, left


@pytest.fixture(scope="module")
def third_boot(deprovisioned, vm1_tree: Path, vm2: dict, keys, workdir: Path):
    return boot_vm(vm1_tree, vm2, "vm1-boot3-as-vm2", workdir, login_key=keys["vm2"][0])


def test_image_runs_the_stock_unit_enabled_by_the_package(image: Path):
    """Precondition: the package's maintainer scripts enabled the shipped unit, unmodified, with
    no drop-in or configuration override anywhere in the image."""
    assert os.path.islink(images.enable_link(image, UNIT)), "dpkg -i did not enable azprov.service"
    shipped = image / "usr/lib/systemd/system" / UNIT  # /lib is /usr/lib (merged /usr)
    assert shipped.read_text() == (REPO / "systemd" / UNIT).read_text()
    assert not (image / "etc/systemd/system" / UNIT).exists()
    for directory in ("etc/systemd/system", "run/systemd/system", "lib/systemd/system", "usr/lib/systemd/system"):
        assert not (image / directory / f"{UNIT}.d").exists(), f"{directory}/{UNIT}.d overrides the unit"
    assert not (image / "etc/azprov/azprov.toml.d").exists() or not any((image / "etc/azprov/azprov.toml.d").iterdir())
    assert (image / "etc/azprov/azprov.toml").read_text() == (REPO / "packaging/azprov.toml").read_text()
    assert not list((image / "etc/ssh").glob("ssh_host_*")), "a generalized image has no host keys"
    assert not (image / STATE).exists()


def test_first_boot_reports_ready_with_the_served_ids(first_boot, vm1: dict):
    booted, records = first_boot
    assert booted.exit_code == 0, booted.explain()
    ready = [r for r in reports(records) if r["report"]["state"] == "Ready"]
    assert ready, f"no Ready report; requests: {[(r['endpoint'], r['status']) for r in records]}\n{booted.explain()}"
    for record in ready:
        assert record["status"] == 200 and record["violations"] == [], record
        assert record["report"]["incarnation"] == vm1["incarnation"]
        assert record["report"]["container_id"] == vm1["container_id"]
        assert record["report"]["instance_id"] == vm1["instance_id"]
    assert not [r for r in reports(records) if r["report"]["state"] != "Ready"]
    assert [r for r in records if r["violations"]] == []
    assert {r["endpoint"] for r in records} >= {"goalstate", "imds", "health"}


def test_first_boot_leaves_one_kvp_success_record(first_boot, vm1: dict, vm1_tree: Path):
    booted, _ = first_boot
    (value,) = kvp_reports(vm1_tree)
    assert value.startswith("result=success|agent=azprov/"), value
    assert value.endswith(f"|vm_id={vm1['vm_id']}") and "|timestamp=" in value


def test_first_boot_console_shows_the_steps_and_the_journal_has_each_once(first_boot):
    booted, _ = first_boot
    lines = console_lines(booted)
    for step in ("goal_state", "metadata", "checks", "hostname", "user", "ssh_keys", "sshd", "host_keys", "report"):
        assert any(line.startswith(f"azprov: step {step}: started") for line in lines), (step, lines)
    assert any("Ready accepted" in line for line in lines), lines
    check_journal_once(booted)


def test_status_wait_says_0_after_a_good_boot(first_boot, vm1: dict):
    booted, _ = first_boot
    waited = booted.record["status_wait"]
    assert waited["rc"] == 0, waited
    data = json.loads(waited["out"])
    assert data["provisioned"] and data["vm_id"] == vm1["vm_id"]
    assert data["last_attempt"]["outcome"] == "succeeded" and data["last_attempt"]["vm_id"] == vm1["vm_id"]


def test_first_boot_sets_the_hostname_to_the_computer_name(first_boot, vm1: dict, vm1_tree: Path):
    booted, _ = first_boot
    name = vm1["computer_name"]
    assert (vm1_tree / "etc/hostname").read_text().strip() == name
    record = booted.record
    assert record["hostname"] == name, booted.explain()
    assert record["hostname_command"]["out"].strip() == name
    assert record["hostnamectl_static"]["out"].strip() == name
    assert record["hostnamectl_transient"]["out"].strip() == name


def _passwd(tree: Path, user: str) -> List[str]:
    for line in (tree / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return fields
    raise AssertionError(f"{user} is not in the image's /etc/passwd")


def check_admin_user(tree: Path, user: str, key: str) -> None:
    """The admin user exists with its home, the served key alone in authorized_keys (modes,
    owner), in the sudo group and in a 0440 sudoers drop-in."""
    _, _, uid, gid, _, home, shell = _passwd(tree, user)
    uid, gid = int(uid), int(gid)
    assert home == f"/home/{user}" and shell.endswith("sh")
    home_dir = tree / home.lstrip("/")
    info = os.lstat(home_dir)
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == uid
    ssh_dir = home_dir / ".ssh"
    info = os.lstat(ssh_dir)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert (info.st_uid, info.st_gid) == (uid, gid)
    keys_file = ssh_dir / "authorized_keys"
    info = os.lstat(keys_file)
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (uid, gid)
    lines = [line.strip() for line in keys_file.read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == [key]
    groups = {f[0]: f[3].split(",") for f in (l.split(":") for l in (tree / "etc/group").read_text().splitlines())}
    assert user in groups["sudo"]
    drop_ins = [p for p in (tree / "etc/sudoers.d").iterdir() if user in p.read_text()]
    assert drop_ins, f"no sudoers drop-in names {user}"
    for path in drop_ins:
        info = os.lstat(path)
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o440, path
        assert (info.st_uid, info.st_gid) == (0, 0), path


def check_ssh_login(booted: nspawn.Boot, scenario: dict) -> None:
    """The recorder logged in over SSH with the served key; sudo works without a password."""
    login = booted.record["ssh_login"]
    assert login is not None and login["rc"] == 0, f"SSH login failed: {login}\n{booted.explain()}"
    assert login["out"].split() == [scenario["admin_username"], scenario["computer_name"], "sudo-ok"], login


def test_first_boot_creates_the_admin_user_with_the_served_key(first_boot, vm1: dict, vm1_tree: Path):
    booted, _ = first_boot
    check_admin_user(vm1_tree, vm1["admin_username"], vm1["public_keys"][0])
    check_ssh_login(booted, vm1)
    assert "passwordauthentication no" in booted.record["sshd_config"]["out"].splitlines()


def test_first_boot_owns_the_sudoers_drop_in_and_locks_roots_password(first_boot, vm1: dict, vm1_tree: Path):
    """The planted rule is gone (named on the console), the drop-in is the admin's line alone and
    the real sudo reads it; root's image password is locked (the hash kept behind '!')."""
    booted, _ = first_boot
    user = vm1["admin_username"]
    assert (vm1_tree / "etc/sudoers.d/90-azprov").read_text().splitlines()[1:] == [f"{user} ALL=(ALL) NOPASSWD:ALL"]
    assert any(f"dropping {PLANTED_SUDO!r}" in line for line in console_lines(booted)), booted.console
    root = next(line.split(":") for line in (vm1_tree / "etc/shadow").read_text().splitlines() if line.startswith("root:"))
    assert root[1] == "!" + IMAGE_ROOT_HASH
    assert any("root had a password in the image" in line for line in console_lines(booted)), booted.console


def test_sshd_starts_only_after_azprov_is_ready(first_boot, vm1_tree: Path):
    booted, _ = first_boot
    started = booted.entries(MESSAGE_ID=SD_STARTED, UNIT=UNIT)
    ssh_starting = booted.entries(MESSAGE_ID=SD_STARTING, UNIT="ssh.service")
    assert started and ssh_starting, booted.explain()
    azprov_ready = int(started[0]["__MONOTONIC_TIMESTAMP"])
    assert int(ssh_starting[0]["__MONOTONIC_TIMESTAMP"]) > azprov_ready, "ssh.service started before azprov was ready"
    azprov, ssh = booted.unit(UNIT), booted.unit("ssh.service")
    assert (azprov["Result"], azprov["ExecMainStatus"]) == ("success", "0"), azprov
    assert (ssh["ActiveState"], ssh["SubState"]) == ("active", "running"), ssh
    assert int(ssh["InactiveExitTimestampMonotonic"]) >= int(azprov["ActiveEnterTimestampMonotonic"]) > 0
    assert ssh["NRestarts"] == "0", "sshd failed at least once (missing host keys?)"
    host_keys = {p.name for p in (vm1_tree / "etc/ssh").glob("ssh_host_*_key")}
    assert {"ssh_host_ed25519_key", "ssh_host_rsa_key", "ssh_host_ecdsa_key"} <= host_keys


def test_first_boot_timing_breakdown(first_boot, workdir: Path, capsys):
    """Prints where the first boot's time goes (figures, not a timed assertion; see
    tests/boot/timing.py and benchmarks/first_boot.py) and checks only the order of events,
    which is correctness: the first request after the unit started, READY=1 after the steps,
    Ready posted after READY=1, sshd started after READY=1."""
    booted, records = first_boot
    timeline = timing.breakdown(booted.record, booted.journal, records)
    text = timeline.format()
    (workdir / "vm1-boot1.timing.txt").write_text(text + "\n")
    with capsys.disabled():
        print(f"\n{text}")
    marks = timeline.milestones
    # unit_exit may be absent: the recorder runs once azprov is active (READY=1), maybe before it exits
    # the early stage does not run without a CD-ROM drive (this boot has none): its rows are
    # checked by tests/test_boot_naming.py, which attaches the disc
    missing = [key for key, _ in timing.MILESTONES
               if key not in marks and key != "unit_exit" and key not in timing.EARLY]
    assert not missing, f"no {missing} in this boot's record, journal or request log\n{text}"
    assert marks["unit_start"] <= marks["first_log"] <= marks["first_request"] <= marks["ready_notify"]
    assert marks["ready_notify"] <= marks["ready_received"], text
    assert marks["ready_notify"] <= marks["sshd_start"] <= marks["sshd_ready"], text
    steps = [name for name, _, end in timeline.steps if end is not None]
    assert {"goal_state", "metadata", "hostname", "user", "ssh_keys", "host_keys", "report"} <= set(steps), text


def test_unit_is_disabled_after_provisioning(first_boot, vm1: dict, vm1_tree: Path):
    booted, _ = first_boot
    assert not os.path.lexists(images.enable_link(vm1_tree, UNIT))
    assert booted.record["azprov_is_enabled"]["out"].strip() == "disabled"
    state = json.loads((vm1_tree / STATE).read_text())
    assert state["vm_id"] == vm1["vm_id"] and state["incarnation"] == vm1["incarnation"]


def test_journal_has_azprovs_structured_entries(first_boot, vm1: dict):
    from azprov.log import MESSAGE_READY

    booted, _ = first_boot
    own = booted.entries(_SYSTEMD_UNIT=UNIT, SYSLOG_IDENTIFIER="azprov")
    structured = [e for e in own if "AZPROV_STEP" in e]
    assert structured, booted.explain()
    steps = {e["AZPROV_STEP"] for e in structured}
    assert {"hostname", "user", "ssh_keys", "host_keys"} <= steps, steps
    assert {e["AZPROV_VM_ID"] for e in own if "AZPROV_VM_ID" in e} == {vm1["vm_id"]}
    outcomes = [e for e in structured if "AZPROV_OUTCOME" in e and "AZPROV_VM_ID" in e]
    assert outcomes and {e["AZPROV_OUTCOME"] for e in outcomes} == {"ok"}
    assert {e["AZPROV_STEP"] for e in outcomes} >= {"hostname", "user", "ssh_keys"}
    assert [e for e in own if e.get("MESSAGE_ID") == MESSAGE_READY], "no Ready message (MESSAGE_ID) in the journal"


def test_second_boot_does_not_contact_the_fabric(second_boot, vm1: dict, vm1_tree: Path):
    booted, records = second_boot
    assert records == [], f"the fabric was contacted again: {records}"
    azprov = booted.unit(UNIT)
    if azprov["ExecMainStartTimestampMonotonic"] != "0":  # it ran: then it must have exited at once, 0
        assert azprov["ExecMainStatus"] == "0", azprov
        ran = int(azprov["ExecMainExitTimestampMonotonic"]) - int(azprov["ExecMainStartTimestampMonotonic"])
        assert ran < 5_000_000, f"azprov ran {ran / 1e6:.1f} s on an already provisioned VM"
    else:
        assert azprov["ActiveState"] == "inactive"
        assert not booted.entries(_SYSTEMD_UNIT=UNIT), "azprov logged on a boot it did not run"
    assert booted.record["hostname"] == vm1["computer_name"]
    assert booted.unit("ssh.service")["ActiveState"] == "active"
    assert not os.path.lexists(images.enable_link(vm1_tree, UNIT))


def test_deprovision_reenables_the_unit_and_clears_the_vm(deprovisioned):
    result, left = deprovisioned
    assert result.returncode == 0, result.stdout + result.stderr
    assert left["enabled"], "azprov deprovision did not enable azprov.service again"
    assert not left["state"], "azprov deprovision left the state file"
    assert left["host_keys"] == [], "azprov deprovision left SSH host keys"
    assert not left["machine_id"], "azprov deprovision left the machine-id"


def test_deprovisioned_image_provisions_again_as_another_vm(deprovisioned, third_boot, vm2: dict,
                                                           vm1_tree: Path):
    assert deprovisioned[0].returncode == 0, deprovisioned[0].stdout + deprovisioned[0].stderr
    booted, records = third_boot
    ready = [r for r in reports(records) if r["report"]["state"] == "Ready"]
    assert ready, f"no Ready as the new VM; {booted.explain()}"
    for record in ready:
        assert record["status"] == 200 and record["violations"] == []
        assert (record["report"]["incarnation"], record["report"]["container_id"], record["report"]["instance_id"]) == \
            (vm2["incarnation"], vm2["container_id"], vm2["instance_id"])
    assert (vm1_tree / "etc/hostname").read_text().strip() == vm2["computer_name"]
    assert booted.record["hostname"] == vm2["computer_name"]
    check_admin_user(vm1_tree, vm2["admin_username"], vm2["public_keys"][0])
    check_ssh_login(booted, vm2)
    assert not os.path.lexists(images.enable_link(vm1_tree, UNIT))
    assert json.loads((vm1_tree / STATE).read_text())["vm_id"] == vm2["vm_id"]
    own = booted.entries(_SYSTEMD_UNIT=UNIT)
    assert {e["AZPROV_VM_ID"] for e in own if "AZPROV_VM_ID" in e} == {vm2["vm_id"]}
    # deprovision dropped vm1's record; this VM wrote its own: still one record
    (value,) = kvp_reports(vm1_tree)
    assert value.startswith("result=success|") and value.endswith(f"|vm_id={vm2['vm_id']}")


# --- failure -----------------------------------------------------------------------------------

@pytest.mark.parametrize("computer_name", HOSTILE_NAMES)
def test_hostile_computer_name_reports_provisioning_failed(computer_name: str, workspace, layers, keys,
                                                           workdir: Path):
    label = "fail-" + secrets.token_hex(3)
    tree = workspace.overlay(layers, label).root
    scenario = vm("azprov-boot-fail", "failadmin", keys["vm1"][1], incarnation=5)
    scenario["computer_name"] = computer_name
    booted, records = boot_vm(tree, scenario, label, workdir)
    sent = reports(records)
    assert not [r for r in sent if r["report"]["state"] == "Ready"], "Ready reported for a hostile computerName"
    failed = [r for r in sent if r["report"]["state"] == "NotReady"
              and r["report"]["substatus"] == "ProvisioningFailed"]
    assert failed, f"no ProvisioningFailed report; requests: {records}\n{booted.explain()}"
    for record in failed:
        assert record["status"] == 200 and record["violations"] == [], record
        assert (record["report"]["incarnation"], record["report"]["container_id"], record["report"]["instance_id"]) == \
            (scenario["incarnation"], scenario["container_id"], scenario["instance_id"])
        description = record["report"]["description"] or ""
        assert "result=error" in description and "reason=" in description, description
        assert "hostname" in description.lower() or "computer" in description.lower(), description
        assert f"vm_id={scenario['vm_id']}" in description, description
    # Still enabled: the next boot tries again.  Nothing recorded as provisioned.
    assert os.path.islink(images.enable_link(tree, UNIT))
    assert booted.record["azprov_is_enabled"]["out"].strip() == "enabled"
    assert not (tree / STATE).exists()
    azprov = booted.unit(UNIT)
    assert azprov["Result"] != "success" and azprov["ExecMainStatus"] not in ("0", ""), azprov
    assert (tree / "etc/hostname").read_text().strip() == images.IMAGE_HOSTNAME
    failures = booted.entries(_SYSTEMD_UNIT=UNIT, AZPROV_OUTCOME="failed")
    assert failures, booted.explain()
    # journalctl -u azprov AZPROV_STEP=hostname finds the failure: the step field names the step
    assert {entry.get("AZPROV_STEP") for entry in failures} == {"hostname"}, failures
    # The host's KVP channel has the reason: exactly one record, the error
    (value,) = kvp_reports(tree)
    assert value.startswith("result=error|reason=invalid_computer_name|agent=azprov/"), value
    assert f"|vm_id={scenario['vm_id']}|" in value and "|step=hostname|" in value
    # The serial console shows the failure and its reason
    lines = console_lines(booted)
    assert any(line.startswith("azprov: error: provisioning failed in step hostname") for line in lines), lines
    assert any("reason=invalid_computer_name" in line for line in lines), lines
    check_journal_once(booted)
    # Break-glass: the host keys were generated anyway and sshd runs
    ssh = booted.unit("ssh.service")
    assert (ssh["ActiveState"], ssh["SubState"], ssh["NRestarts"]) == ("active", "running", "0"), ssh
    host_keys = {p.name for p in (tree / "etc/ssh").glob("ssh_host_*_key")}
    assert {"ssh_host_ed25519_key", "ssh_host_rsa_key", "ssh_host_ecdsa_key"} <= host_keys
    # status --wait: 1, and the failed attempt survives in the history
    waited = booted.record["status_wait"]
    assert waited["rc"] == 1, waited
    last = json.loads(waited["out"])["last_attempt"]
    assert (last["outcome"], last["step"], last["reason"]) == ("failed", "hostname", "invalid_computer_name")


WAITER_UNIT = """\
# Test-only: what a start task does, early in boot: wait for azprov, exit with its verdict.
[Unit]
Description=azprov boot test: azprov status --wait from early in the boot

[Service]
Type=oneshot
ExecStart=/usr/bin/azprov status --wait

[Install]
WantedBy=multi-user.target
"""


# --- a WireServer outage, and the JSON health protocol ------------------------------------------

def test_wireserver_outage_retries_on_the_console_then_json_health(workspace, layers, keys, workdir: Path):
    """The WireServer answers 503 (Retry-After 1) for its first 20 s: each retry shows on the
    serial console; then, with [health] protocol = "json", Ready goes to /provisioning/health."""
    label = "outage-json-" + secrets.token_hex(3)
    tree = workspace.overlay(layers, label).root
    dropins = tree / "etc/azprov/azprov.toml.d"
    dropins.mkdir(parents=True, exist_ok=True)
    (dropins / "50-json-health.toml").write_text('[health]\nprotocol = "json"\n')
    # A script that waits for provisioning, started early (after basic.target, not after azprov):
    # `azprov status --wait` must block through the outage until azprov has finished.
    (tree / "etc/systemd/system/azprov-boottest-wait.service").write_text(WAITER_UNIT)
    images.enable_link(tree, "azprov-boottest-wait.service").symlink_to("/etc/systemd/system/azprov-boottest-wait.service")
    scenario = vm("azprov-boot-json", "jsonadmin", keys["vm1"][1], incarnation=2)
    scenario["wireserver"] = {"unavailable_for": 20.0, "retry_after": "1"}
    booted, records = boot_vm(tree, scenario, label, workdir)
    assert booted.unit(UNIT)["ExecMainStatus"] == "0", booted.explain()
    retries = [line for line in console_lines(booted)
               if line.startswith("azprov: goal state: attempt ") and "HTTP 503; retrying in" in line]
    assert len(retries) >= 2, console_lines(booted)
    assert len([r for r in records if r["endpoint"] == "goalstate" and r["status"] == 503]) >= len(retries)
    posted = [r for r in records if r["endpoint"] == "provisioning_health"]
    assert [(r["status"], r["report"]["state"], r["violations"]) for r in posted] == [(201, "Ready", [])], posted
    assert reports(records) == [], "an XML health report was posted too"
    (value,) = kvp_reports(tree)
    assert value.startswith("result=success|") and value.endswith(f"|vm_id={scenario['vm_id']}")
    check_journal_once(booted)
    assert booted.record["status_wait"]["rc"] == 0
    azprov, waiter = booted.unit(UNIT), booted.unit("azprov-boottest-wait.service")
    assert waiter["Result"] == "success" and waiter["ExecMainStatus"] == "0", waiter
    started, ended = int(waiter["ExecMainStartTimestampMonotonic"]), int(waiter["ExecMainExitTimestampMonotonic"])
    azprov_exit = int(azprov["ExecMainExitTimestampMonotonic"])
    assert 0 < started < azprov_exit, "the waiter did not start while azprov was running (or queued)"
    assert ended >= azprov_exit, f"status --wait returned {(azprov_exit - ended) / 1e6:.1f} s before azprov exited"


# --- the provisioning disc: password, custom data ---------------------------------------------

BOOT_PASSWORD = "Boot-Test-" + secrets.token_hex(6)  # unique: searched for in the whole tree
CUSTOM_SCRIPT = "#!/bin/sh\necho azprov-custom-data-ran > /var/lib/custom-data-ran\necho custom data script ran\n"


def password_vm(name: str, user: str) -> dict:
    scenario = vm(name, user, "unused", incarnation=4)
    scenario["public_keys"] = []  # the password is the only way in
    scenario["admin_password"] = BOOT_PASSWORD
    scenario["custom_data"] = CUSTOM_SCRIPT
    return scenario


def tree_contains(tree: Path, needle: bytes) -> List[str]:
    """Every regular file under ``tree`` (journal files included) that holds ``needle``."""
    found = []
    for directory, _, files in os.walk(tree):
        for name in files:
            path = os.path.join(directory, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                with open(path, "rb") as handle:
                    if needle in handle.read():
                        found.append(path)
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def password_boot(workspace, layers, workdir: Path):
    from tests.boot import disc

    label = "password-vm"
    tree = workspace.overlay(layers, label).root
    run_dropin = tree / "etc/azprov/azprov.toml.d/50-boot-test.toml"
    run_dropin.parent.mkdir(parents=True, exist_ok=True)
    run_dropin.write_text("[custom_data]\nrun = true\n")
    scenario = password_vm("azprov-boot-pw", "pwadmin")
    image = provisioning_disc(scenario, workdir / label)
    secret_files = {"password": BOOT_PASSWORD + "\n", "user": "pwadmin\n"}
    with disc.attached(image) as attach, disc.secret_dir(workdir, label, secret_files) as secret:
        booted, records = boot_vm(tree, scenario, label, workdir, nspawn_args=[*attach, *secret])
    assert not (workdir / f"{label}.secret").exists(), "the test password was left in the workdir"
    return tree, scenario, booted, records


def test_password_vm_reports_ready_and_a_password_login_works(password_boot):
    tree, scenario, booted, records = password_boot
    sent = reports(records)
    assert [r["report"]["state"] for r in sent] == ["Ready"], f"{sent}\n{booted.explain()}"
    login = booted.record["password_login"]
    assert login is not None and login["rc"] == 0, f"password login failed: {login}\n{booted.explain()}"
    assert login["out"].split() == ["pwadmin", "sudo-needs-password", "sudo-with-password-ok"], login
    assert "passwordauthentication yes" in booted.record["sshd_config"]["out"]
    sudoers = (tree / "etc/sudoers.d/90-azprov").read_text()
    assert "pwadmin ALL=(ALL) PASSWD:ALL" in sudoers, sudoers
    said = [str(e.get("MESSAGE")) for e in booted.entries(_SYSTEMD_UNIT=UNIT)]
    # read in user space by the UDF reader (this kernel has no udf module: a mount would fail)
    assert any(m.startswith("read ovf-env.xml") and m.endswith("from /dev/sr0 (udf)") for m in said), said


def test_password_vm_stores_custom_data_0600_and_runs_it_after_ready(password_boot):
    tree, scenario, booted, _ = password_boot
    stored = tree / "var/lib/azprov/custom-data"
    info = os.lstat(stored)
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o600, 0, 0)
    assert stored.read_text() == CUSTOM_SCRIPT
    assert stat.S_IMODE(os.lstat(tree / "var/lib/azprov").st_mode) == 0o700
    unit_state = booted.record["custom_data_unit"]
    assert unit_state.get("Result") == "success", f"{unit_state}\n{booted.explain()}"
    assert (tree / "var/lib/custom-data-ran").read_text() == "azprov-custom-data-ran\n"
    said = [e for e in booted.journal if e.get("_SYSTEMD_UNIT") == "azprov-custom-data.service"]
    assert any(e.get("MESSAGE") == "custom data script ran" for e in said), said
    ready = [e for e in booted.entries(_SYSTEMD_UNIT=UNIT) if "Ready accepted" in str(e.get("MESSAGE"))]
    started = [e for e in said if e.get("MESSAGE") == "custom data script ran"]
    assert ready and started and int(ready[0]["__MONOTONIC_TIMESTAMP"]) < int(started[0]["__MONOTONIC_TIMESTAMP"])


def test_password_vm_leaves_the_password_nowhere_in_the_image(password_boot):
    tree, _, booted, _ = password_boot
    assert list((tree / "var/log/journal").rglob("*.journal")), "no journal files to search"
    assert tree_contains(tree, BOOT_PASSWORD.encode()) == []
    saved = (tree / "var/lib/azprov/ovf-env.xml").read_bytes()
    assert b"redacted" in saved and os.lstat(tree / "var/lib/azprov/ovf-env.xml").st_mode & 0o077 == 0


def test_password_vm_without_a_disc_reports_provisioning_failed(workspace, layers, workdir: Path):
    label = "password-no-disc"
    tree = workspace.overlay(layers, label).root
    scenario = password_vm("azprov-boot-nodisc", "nodiscadmin")
    booted, records = boot_vm(tree, scenario, label, workdir)
    sent = reports(records)
    assert not [r for r in sent if r["report"]["state"] == "Ready"], "Ready for a VM nobody can log in to"
    failed = [r for r in sent if r["report"]["substatus"] == "ProvisioningFailed"]
    assert failed, f"{records}\n{booted.explain()}"
    description = failed[0]["report"]["description"]
    assert "reason=no_way_to_log_in" in description and "no password was found" in description, description
    assert not (tree / STATE).exists()
