"""azprov.service enable/disable for an image tree (the .wants link)."""

from __future__ import annotations

import os

import pytest

from azprov import unit
from azprov.errors import StepFailed
from azprov.host import Host
from support.fakes import FakeRunner


def test_disable_removes_the_wants_link_once(scratch_root):
    host = Host(scratch_root, runner=FakeRunner())
    assert unit.is_enabled(host)
    assert unit.disable(host) is True
    assert not unit.is_enabled(host)
    assert unit.disable(host) is False
    assert os.path.exists(host.path("/usr/lib/systemd/system/azprov.service"))  # the unit stays
    assert host.runner.calls == []


def test_enable_links_to_the_installed_unit(scratch_root):
    host = Host(scratch_root)
    unit.disable(host)
    assert unit.enable(host) is True
    assert os.readlink(host.path(unit.WANTS_LINK)) == "/usr/lib/systemd/system/azprov.service"
    assert unit.enable(host) is False


def test_enable_finds_the_unit_under_lib(tmp_path):
    os.makedirs(tmp_path / "lib/systemd/system")
    (tmp_path / "lib/systemd/system/azprov.service").write_text("[Unit]\n")
    host = Host(str(tmp_path))
    assert unit.enable(host) is True
    assert os.readlink(host.path(unit.WANTS_LINK)) == "/lib/systemd/system/azprov.service"


def test_a_local_unit_in_etc_wins(scratch_root):
    os.makedirs(os.path.join(scratch_root, "etc/systemd/system"), exist_ok=True)
    open(os.path.join(scratch_root, "etc/systemd/system/azprov.service"), "w").write("[Unit]\n")
    assert unit.unit_file(Host(scratch_root)) == "/etc/systemd/system/azprov.service"


def test_a_masked_unit_is_not_linked(tmp_path):
    os.makedirs(tmp_path / "etc/systemd/system")
    os.symlink("/dev/null", tmp_path / "etc/systemd/system/azprov.service")
    os.makedirs(tmp_path / "dev")
    (tmp_path / "dev/null").write_text("")
    with pytest.raises(StepFailed, match="not installed"):
        unit.enable(Host(str(tmp_path)))


def test_enable_without_the_unit_fails_clearly(tmp_path):
    with pytest.raises(StepFailed, match="not installed"):
        unit.enable(Host(str(tmp_path)))


def test_with_systemd_running_systemctl_does_it(scratch_root):
    from azprov.host import CommandResult
    from support.fakes import live_host

    answers = {"is-enabled": "enabled\n"}

    def systemctl(argv):
        return CommandResult(tuple(argv), 0, answers.get(argv[1], ""), "")

    runner = FakeRunner(systemctl)
    host = live_host(scratch_root, runner)
    assert unit.disable(host) is True
    assert runner.calls == [["systemctl", "is-enabled", "azprov.service"],
                            ["systemctl", "disable", "--no-reload", "azprov.service"]]
    answers["is-enabled"] = "disabled\n"
    runner.calls.clear()
    assert unit.enable(host) is True
    assert runner.calls[-1] == ["systemctl", "enable", "azprov.service"]
    assert os.path.lexists(os.path.join(scratch_root, "etc/systemd/system/multi-user.target.wants/azprov.service"))


@pytest.mark.parametrize("jobs, show, running", [
    ("", "ActiveState=active\nMainPID=0\n", False),  # finished (RemainAfterExit)
    ("", "ActiveState=failed\nMainPID=0\n", False),
    ("", "ActiveState=inactive\nMainPID=0\n", False),  # disabled, never started this boot
    ("", "ActiveState=activating\nMainPID=412\n", True),  # before READY=1
    ("", "ActiveState=active\nMainPID=412\n", True),  # after READY=1, still reporting Ready
    ("17 azprov.service start waiting\n", "ActiveState=inactive\nMainPID=0\n", True),  # queued
])
def test_is_running_reads_jobs_state_and_main_pid(scratch_root, jobs, show, running):
    from azprov.host import CommandResult
    from support.fakes import live_host

    def systemctl(argv):
        return CommandResult(tuple(argv), 0, {"list-jobs": jobs, "show": show}[argv[1]], "")

    runner = FakeRunner(systemctl)
    assert unit.is_running(live_host(scratch_root, runner)) is running
    assert runner.calls[0] == ["systemctl", "list-jobs", "--no-legend", "--no-pager", "azprov.service"]


def test_check_refuses_a_symlinked_wants_directory(scratch_root, tmp_path):
    import shutil

    from azprov import errors

    wants = os.path.join(scratch_root, os.path.dirname(unit.WANTS_LINK.lstrip("/")))
    shutil.move(wants, str(tmp_path / "wants"))
    os.symlink(str(tmp_path / "wants"), wants)
    with pytest.raises(errors.UnsafePath):
        unit.check(Host(scratch_root))
    from support.scratch_root import make_scratch_root

    unit.check(Host(make_scratch_root(str(tmp_path / "clean"))))
