"""Power cuts: QEMU SIGKILLed (the disk on ``cache=writeback``: what the guest had not written
out is lost) right after the goal-state GET, right after the user step, right after the Ready
POST; then a normal boot must converge (Ready accepted, never NotReady, the admin logs in with
the key, the host name, account files, sudoers and state intact, the unit disabled) and the boot
after it sends nothing.  The three trials run at the same time, each on its own overlay.
``benchmarks/power_cuts.py`` runs the same trial at random points."""

from __future__ import annotations

import threading

import pytest

from tests.vm import harness

pytestmark = harness.MARKS

POINTS = ("goalstate", "user", "ready")


@pytest.fixture(scope="module")
def trials(vm_workspace, bookworm, vm_key):
    private, public = vm_key
    found: dict = {}

    def one(point: str) -> None:
        data = harness.scenario(f"azprov-cut-{point}", "cutadmin", [public], incarnation=5)
        try:
            directory = vm_workspace.path / "vms" / f"cut-{point}"
            found[point] = (data, harness.power_cut_trial(bookworm, data, private, directory, point))
        except BaseException as exc:  # reported by the test, not lost in the thread
            found[point] = (data, exc)

    threads = [threading.Thread(target=one, args=(point,)) for point in POINTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


@pytest.mark.parametrize("point", POINTS)
def test_a_power_cut_converges_on_the_next_boot(trials, point, vm_dir):
    data, trial = trials[point]
    if isinstance(trial, BaseException):
        raise trial
    harness.check_trial(trial, data, vm_dir)


def test_the_cuts_came_where_they_were_meant_to(trials):
    """The ready cut came after a Ready reached the fabric, the goal-state cut before any report."""
    _, goal = trials["goalstate"]
    _, ready = trials["ready"]
    if isinstance(goal, BaseException) or isinstance(ready, BaseException):
        pytest.fail("a trial failed (see its own test)")
    assert not harness.health_reports(goal.cut_records)
    assert harness.health_reports(ready.cut_records)
