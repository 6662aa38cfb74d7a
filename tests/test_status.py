"""azprov status: the last attempt, --json last_attempt, --wait's blocking and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from azprov import attempts, state, status
from azprov.errors import InvalidMetadata
from azprov.host import Host
from support import cli

HOLD_LOCK = """
import sys, time
from azprov import state
from azprov.host import Host
with state.acquire(Host(sys.argv[1]), wait=0):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def fail_once(host):
    recorder = attempts.Recorder(host)
    recorder.begin("vm-1")
    recorder.failed(InvalidMetadata("computer name '../x' is not a valid hostname"), "hostname", None)


def test_status_shows_the_last_failed_attempt(scratch_root):
    fail_once(Host(scratch_root))
    result = cli.azprov("status", "--root", scratch_root)
    assert result.returncode == 0, result.stderr
    assert "provisioned: no" in result.stdout
    assert "last attempt: failed (started " in result.stdout
    assert "in step hostname: invalid_metadata: computer name '../x' is not a valid hostname" in result.stdout
    data = json.loads(cli.azprov("status", "--json", "--root", scratch_root).stdout)
    last = data["last_attempt"]
    assert {k: last[k] for k in ("outcome", "step", "reason")} == {
        "outcome": "failed", "step": "hostname", "reason": "invalid_metadata"}
    assert last["message"].startswith("computer name") and last["at"]


def test_status_without_any_attempt(scratch_root):
    data = json.loads(cli.azprov("status", "--json", "--root", scratch_root).stdout)
    assert data["last_attempt"] is None


def test_wait_returns_at_once_with_1_when_not_provisioned(scratch_root):
    fail_once(Host(scratch_root))
    started = time.monotonic()
    result = cli.azprov("status", "--wait", "--root", scratch_root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 10


def test_wait_returns_0_when_provisioned(scratch_root):
    host = Host(scratch_root)
    state.save(host, state.State(vm_id="vm-1", incarnation=1, container_id="c", instance_id="i",
                                 ready_at=state.now()))
    result = cli.azprov("status", "--wait", "--json", "--root", scratch_root)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["provisioned"] is True


def test_wait_blocks_while_a_run_holds_the_lock(scratch_root):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, scratch_root, "2"], stdout=subprocess.PIPE,
                              text=True, env=cli.environment())
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert status.running(Host(scratch_root))
        started = time.monotonic()
        result = cli.azprov("status", "--wait", "--root", scratch_root)
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert result.returncode == 1 and waited >= 1.0, (waited, result.stdout)
    assert not status.running(Host(scratch_root))


def test_exit_code_rules():
    assert status.exit_code({"provisioned": True, "this_vm": True}) == 0
    assert status.exit_code({"provisioned": True, "this_vm": None}) == 0  # no DMI to compare
    assert status.exit_code({"provisioned": True, "this_vm": False}) == 1  # another VM's state
    assert status.exit_code({"provisioned": False, "this_vm": None}) == 1
