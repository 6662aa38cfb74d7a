"""Power cuts: QEMU SIGKILLed (the disk on ``cache=writeback``: what the guest had not written
out is lost) right after the goal-state GET, right after the user step, right after the Ready
POST; then a normal boot must converge (Ready accepted, never NotReady, the admin logs in with
the key, the host name, account files, sudoers and state intact, the unit disabled) and the boot
after it sends nothing.  The three trials run at the same time, each on its own overlay.
``benchmarks/power_cuts.py`` runs the same trial at random points."""

from __future__ import annotations

import pytest

from tests.vm import harness

pytestmark = harness.MARKS

POINTS = ("goalstate", "user", "ready")


@pytest.fixture(scope="module")
def trials(vm_workspace, bookworm, vm_key):
    private, public = vm_key
    scenarios = {point: harness.scenario(f"azprov-cut-{point}", "cutadmin", [public], incarnation=5)
                 for point in POINTS}

    def job(point):
        directory = vm_workspace.path / "vms" / f"cut-{point}"
        return lambda: harness.power_cut_trial(bookworm, scenarios[point], private, directory, point)

    return scenarios, harness.in_parallel({point: job(point) for point in POINTS})


@pytest.mark.parametrize("point", POINTS)
def test_a_power_cut_converges_on_the_next_boot(trials, point, vm_dir):
    scenarios, results = trials
    harness.check_trial(harness.result(results, point), scenarios[point], vm_dir)


def test_the_cuts_came_where_they_were_meant_to(trials):
    """The ready cut came after a Ready reached the fabric, the goal-state cut before any report."""
    _, results = trials
    goal, ready = harness.result(results, "goalstate"), harness.result(results, "ready")
    assert not harness.health_reports(goal.cut_records)
    assert harness.health_reports(ready.cut_records)
