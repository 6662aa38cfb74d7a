"""Finding the provisioning disc and reading it (azprov.media.disc, .discover, .mount): drives in
a scratch tree (a regular file stands in for the device there), the sysfs CD-ROM test, the mount
fallback and eject through the fake runner (this kernel has neither udf nor iso9660)."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from azprov.host import CommandResult, Host
from azprov.media import discover
from azprov.media.disc import DiscUnreadable, eject, read_ovf_env
from support import discs
from support.fakes import FakeRunner

OVF = discs.ovf_env()


@pytest.fixture(scope="module")
def udf_disc(tmp_path_factory):
    return discs.genisoimage(tmp_path_factory.mktemp("udf"), OVF, "-udf")


def tree(tmp_path, runner=None) -> Host:
    (tmp_path / "dev").mkdir(exist_ok=True)
    (tmp_path / "sys/class/block").mkdir(parents=True, exist_ok=True)
    return Host(str(tmp_path), runner=runner or FakeRunner())


def block(host: Host, name: str, scsi_type=None) -> None:
    entry = os.path.join(host.root, "sys/class/block", name)
    os.makedirs(os.path.join(entry, "device"), exist_ok=True)
    if scsi_type is not None:
        with open(os.path.join(entry, "device/type"), "w") as handle:
            handle.write(f"{scsi_type}\n")


def test_sr0_comes_first_then_other_cdrom_drives_never_data_disks(tmp_path, udf_disc):
    host = tree(tmp_path)
    for name, kind in (("sda", 0), ("sdb", 0), ("sr1", None), ("sr10", None), ("sdc", 5), ("vda", None)):
        block(host, name, kind)
        shutil.copy(udf_disc, tmp_path / "dev" / name)
    assert discover.candidates(host) == ["/dev/sdc", "/dev/sr1", "/dev/sr10"]
    shutil.copy(udf_disc, tmp_path / "dev/sr0")
    assert discover.candidates(host)[0] == "/dev/sr0"


def test_a_symlink_or_directory_is_not_a_drive(tmp_path, udf_disc):
    host = tree(tmp_path)
    os.symlink(str(udf_disc), tmp_path / "dev/sr0")
    (tmp_path / "dev/sr1").mkdir()
    block(host, "sr1")
    assert discover.candidates(host) == []


def test_no_drive_means_no_disc(tmp_path):
    assert read_ovf_env(tree(tmp_path)) is None


@pytest.mark.parametrize("flags,method", [(("-udf",), "udf"), ((), "iso9660"), (("-J",), "iso9660")])
def test_reads_the_disc_in_user_space_without_a_command(tmp_path, flags, method):
    host = tree(tmp_path)
    disc = discs.genisoimage(tmp_path, OVF, *flags)
    shutil.copy(disc, tmp_path / "dev/sr0")
    found = read_ovf_env(host)
    assert (found.device, found.method, found.data) == ("/dev/sr0", method, OVF)
    assert host.runner.calls == []  # no mount, and no eject in a --root tree


def test_an_empty_drive_is_skipped_for_the_next_one(tmp_path, udf_disc):
    host = tree(tmp_path)
    (tmp_path / "dev/sr0").write_bytes(b"")  # no medium
    block(host, "sr1")
    shutil.copy(udf_disc, tmp_path / "dev/sr1")
    assert read_ovf_env(host).device == "/dev/sr1"


def test_unparseable_disc_falls_back_to_a_private_read_only_mount(tmp_path):
    seen = {}

    def fake(argv):
        if argv[0] == "mount":
            target = argv[-1]
            info = os.stat(target)
            seen.update(mode=stat.S_IMODE(info.st_mode), argv=argv)
            with open(os.path.join(target, "ovf-env.xml"), "wb") as handle:  # what the kernel shows
                handle.write(OVF)
        elif argv[0] == "umount":
            os.unlink(os.path.join(argv[-1], "ovf-env.xml"))
        return None

    host = tree(tmp_path, FakeRunner(fake))
    (tmp_path / "dev/sr0").write_bytes(b"\x5a" * 2048 * 300)  # neither UDF nor ISO9660
    found = read_ovf_env(host)
    assert (found.method, found.data) == ("mount", OVF)
    assert host.runner.commands() == ["mount", "umount"]
    assert seen["mode"] == 0o700
    assert seen["argv"][:5] == ["mount", "-o", "ro,nosuid,nodev,noexec", "-t", "udf,iso9660"]
    assert seen["argv"][5] == str(tmp_path / "dev/sr0")
    assert os.listdir(tmp_path / "run/azprov") == []  # the mount point is gone


def test_a_disc_neither_readable_nor_mountable_is_an_error_naming_both(tmp_path):
    def refuse(argv):
        if argv[0] == "mount":
            return CommandResult(tuple(argv), 32, "", "mount: unknown filesystem type 'udf'")
        return None

    host = tree(tmp_path, FakeRunner(refuse))
    (tmp_path / "dev/sr0").write_bytes(b"\x5a" * 2048 * 300)
    with pytest.raises(DiscUnreadable) as caught:
        read_ovf_env(host)
    assert caught.value.reason == "provisioning_media_unreadable"
    assert "anchor" in str(caught.value) and "unknown filesystem type" in str(caught.value)
    assert os.listdir(tmp_path / "run/azprov") == []


def test_a_symlinked_ovf_env_in_a_mount_is_refused(tmp_path):
    def fake(argv):
        if argv[0] == "mount":
            os.symlink("/etc/shadow", os.path.join(argv[-1], "ovf-env.xml"))
        elif argv[0] == "umount":
            os.unlink(os.path.join(argv[-1], "ovf-env.xml"))
        return None

    host = tree(tmp_path, FakeRunner(fake))
    (tmp_path / "dev/sr0").write_bytes(b"\x5a" * 2048 * 300)
    with pytest.raises(DiscUnreadable, match="symbolic link"):
        read_ovf_env(host)
    assert host.runner.commands() == ["mount", "umount"]


def test_eject_failure_is_only_a_log_line(caplog, monkeypatch):
    runner = FakeRunner(lambda argv: CommandResult(tuple(argv), 1, "", "eject: unable to eject"))
    host = Host("/", runner=runner)
    monkeypatch.setattr(host, "which", lambda name: "/usr/bin/eject")
    with caplog.at_level("INFO"):
        eject(host, "/dev/sr0")
    assert runner.calls == [["eject", "/dev/sr0"]]
    assert "could not eject /dev/sr0" in caplog.text


def test_mount_point_is_found_in_mountinfo_by_device_number():
    """An already mounted disc is read where it is mounted (udf or iso9660 only)."""
    mountinfo = [
        "30 1 8:1 / / rw - ext4 /dev/sda1 rw",
        "40 30 11:0 / /media/with\\040space ro - udf /dev/sr0 ro",
    ]
    assert discover.find_mount(mountinfo, os.makedev(11, 0)) == "/media/with space"
    assert discover.find_mount(mountinfo, os.makedev(8, 1)) is None  # ext4: not a disc
    assert discover.find_mount(mountinfo, os.makedev(11, 1)) is None


def test_the_mount_point_comes_from_the_probes_and_an_image_tree_has_none(scratch_root):
    from support.fakes import live_host

    device = os.path.join(scratch_root, "dev", "sr0")
    os.makedirs(os.path.dirname(device), exist_ok=True)
    open(device, "wb").close()
    number = os.stat(device).st_rdev  # a regular file: 0:0, as the line below says
    line = f"36 25 {os.major(number)}:{os.minor(number)} / /media/cdrom ro,relatime - iso9660 /dev/sr0 ro"
    assert discover.mount_point(live_host(scratch_root, FakeRunner(), mountinfo=[line]), "/dev/sr0") == "/media/cdrom"
    assert discover.mount_point(live_host(scratch_root, FakeRunner(), mountinfo=[]), "/dev/sr0") is None
    assert discover.mount_point(Host(scratch_root), "/dev/sr0") is None  # NOT_LIVE: nothing mounted
