"""azprov temp-disk for real: loop devices holding disks as Azure delivers them (mkntfs,
ntfscp), formatted and mounted by the job, and disks with anything else left byte for byte
alone.  Root only (losetup, mkfs, mount); the outcome record goes to a scratch tree."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from azprov import tempdisk
from azprov.config import TempDiskConfig
from azprov.disks import layout
from azprov.errors import TempDiskFailed
from azprov.host import Host
from tests.support import disks as support
from tests.support.cli import requires_root
from tests.support.disks import MIB, azure_disk, loop

pytestmark = requires_root


def settings(device: str, mount_point: Path, **changes) -> TempDiskConfig:
    return TempDiskConfig(device=device, mount_point=str(mount_point), wait=0.2, **changes)


def digest(device: str) -> str:
    with open(device, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def mounted(mount_point: Path) -> str:
    """The source mounted on ``mount_point``, or ""."""
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[4] == str(mount_point):
            return fields[fields.index("-", 6) + 2]
    return ""


@pytest.fixture
def job(tmp_path):
    """``run(settings) -> Outcome`` on this machine, the record kept under tmp_path/state."""
    state = tmp_path / "state"
    state.mkdir()
    mounts = []

    def run(config: TempDiskConfig, **kwargs):
        mounts.append(config.mount_point)
        return tempdisk.run(Host("/"), config, state=Host(str(state)), **kwargs)

    run.record = lambda: tempdisk.load_record(Host(str(state)))
    yield run
    for mount_point in mounts:
        os.system(f"umount -q '{mount_point}' 2>/dev/null")


def test_a_disk_as_azure_delivers_it_is_formatted_and_mounted_then_kept(tmp_path, job):
    support.need("mkfs.ext4", "mount")
    mnt = tmp_path / "mnt"
    with loop(azure_disk(tmp_path / "disk.img", 96 * MIB)) as device:
        dry = job(settings(device, mnt), dry_run=True)
        assert dry.outcome == "formatted" and "would format" in dry.message and job.record() is None
        outcome = job(settings(device, mnt))
        assert outcome.outcome == "formatted", outcome
        assert mounted(mnt) == device
        assert (mnt / tempdisk.README).read_text().startswith("WARNING: THIS IS A TEMPORARY DISK.")
        assert job.record()["outcome"] == "formatted" and job.record()["device"] == device
        with open(device, "rb") as handle:
            assert layout.own_filesystem(handle.read(4096)) == ("ext4", layout.LABEL)
        # the next boot of the same VM: already mounted
        assert job(settings(device, mnt)).outcome == "mounted"
        # a reboot: the disk keeps its files, the job mounts it again and formats nothing
        (mnt / "work.txt").write_text("kept")
        assert os.system(f"umount '{mnt}'") == 0
        again = job(settings(device, mnt))
        assert again.outcome == "mounted" and "made" in again.message
        assert (mnt / "work.txt").read_text() == "kept"


def test_a_temp_disk_holding_a_user_file_is_never_formatted(tmp_path, job):
    mnt = tmp_path / "mnt"
    with loop(azure_disk(tmp_path / "disk.img", 64 * MIB, files={"model.bin": b"weights" * 100})) as device:
        before = digest(device)
        outcome = job(settings(device, mnt))
        assert outcome.outcome == "left-alone" and "model.bin" in outcome.message
        assert digest(device) == before and mounted(mnt) == ""
        assert job.record()["outcome"] == "left-alone"


def test_a_blank_disk_is_formatted_and_a_foreign_filesystem_left_alone(tmp_path, job):
    support.need("mkfs.ext4")
    path = tmp_path / "disk.img"
    with open(path, "wb") as handle:
        handle.truncate(64 * MIB)
    mnt = tmp_path / "mnt"
    with loop(path) as device:
        assert job(settings(device, mnt)).outcome == "formatted" and mounted(mnt) == device
    os.system(f"umount -q '{mnt}'")
    support.run("mkfs.ext4", "-q", "-F", "-L", "database", str(path))
    with loop(path) as device:
        before = digest(device)
        outcome = job(settings(device, mnt))
        assert outcome.outcome == "left-alone" and "'database'" in outcome.message
        assert digest(device) == before and mounted(mnt) == ""


def test_in_use_disks_and_busy_mount_points_are_left_alone(tmp_path, job):
    support.need("mkfs.ext4")
    elsewhere, mnt = tmp_path / "elsewhere", tmp_path / "mnt"
    elsewhere.mkdir()
    with loop(azure_disk(tmp_path / "disk.img", 64 * MIB)) as device:
        before = digest(device)
        (mnt / "precious").mkdir(parents=True)
        outcome = job(settings(device, mnt))
        assert outcome.outcome == "left-alone" and "not empty" in outcome.message
        assert digest(device) == before
        (mnt / "precious").rmdir()
        support.run("mount", "-t", "tmpfs", "none", str(mnt))
        try:
            outcome = job(settings(device, mnt))
            assert outcome.outcome == "left-alone" and "something else is mounted" in outcome.message
        finally:
            support.run("umount", str(mnt))
    path = tmp_path / "ext.img"
    with open(path, "wb") as handle:
        handle.truncate(32 * MIB)
    support.run("mkfs.ext4", "-q", "-F", "-L", layout.LABEL, str(path))
    with loop(path) as device:
        support.run("mount", device, str(elsewhere))
        try:
            outcome = job(settings(device, mnt))
            assert outcome.outcome == "left-alone" and f"mounted on {elsewhere}" in outcome.message
        finally:
            support.run("umount", str(elsewhere))


def test_a_failed_mkfs_is_a_failure_recorded_for_status(tmp_path, job, monkeypatch):
    mnt = tmp_path / "mnt"
    monkeypatch.setitem(tempdisk.MKFS, "ext4", ["mkfs.azprov-test-missing"])
    with loop(azure_disk(tmp_path / "disk.img", 64 * MIB)) as device:
        with pytest.raises(TempDiskFailed) as raised:
            job(settings(device, mnt))
        assert raised.value.reason == "temp_disk_failed" and "not installed" in str(raised.value)
        assert job.record()["outcome"] == "failed" and mounted(mnt) == ""


def test_switched_off_or_no_disk(tmp_path, job):
    mnt = tmp_path / "mnt"
    assert job(settings("/dev/loop0", mnt, enabled=False)).outcome == "disabled"
    outcome = job(settings("/dev/azprov-no-such-disk", mnt))
    assert outcome.outcome == "no-disk" and job.record()["outcome"] == "no-disk"


def test_the_verdict_is_read_again_through_the_descriptor_that_wipes(tmp_path, job, monkeypatch):
    """Were the disk to change between the first look and the format (it is read again through
    the exclusive descriptor that wipes), nothing is written."""
    mnt = tmp_path / "mnt"
    with loop(azure_disk(tmp_path / "disk.img", 64 * MIB, files={"notes.txt": b"mine"})) as device:
        before = digest(device)
        monkeypatch.setattr(tempdisk, "read_verdict", lambda host, disk: layout.Verdict("azure-ntfs", "stale look"))
        with pytest.raises(TempDiskFailed, match="changed before it was formatted"):
            job(settings(device, mnt))
        assert digest(device) == before and mounted(mnt) == ""
