"""azprov.disks: the NTFS reader against ntfs-3g's tools, the verdict on disks built as Azure
delivers them, detection on recorded ``/sys`` trees, fstab lines and the disk's owner."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from azprov.disks import fstab, layout, ntfs, owner, sysfs
from azprov.host import Host
from azprov.media.image import Image
from tests.support import disks as support
from tests.support.disks import MIB, azure_disk, need


def image(path: Path) -> Image:
    fd = os.open(path, os.O_RDONLY)
    return Image(fd)


def verdict(path: Path) -> layout.Verdict:
    return layout.classify(image(path))


# ---------------------------------------------------------------- the NTFS reader vs ntfs-3g


def ntfsls_names(path: Path) -> set:
    """The root directory as ntfs-3g lists it (system files and 8.3 names hidden, as ours)."""
    need("ntfsls")
    out = support.run("ntfsls", "-f", str(path)).stdout.decode()
    return {line for line in out.splitlines() if line}


def our_names(path: Path) -> set:
    volume = ntfs.read_volume(image(path))
    return {e.name for e in volume.entries if e.record >= ntfs.FIRST_USER_RECORD}


def test_reader_reads_the_label_and_root_of_a_fresh_volume(tmp_path):
    path = tmp_path / "vol.img"
    support.ntfs_volume(path, 32 * MIB)
    volume = ntfs.read_volume(image(path))
    assert volume.label == "Temporary Storage"
    assert our_names(path) == ntfsls_names(path) == {"DATALOSS_WARNING_README.txt"}
    names = {e.name for e in volume.entries}
    assert {"$MFT", "$Volume", "$Extend", "."} <= names  # metadata files, below record 16
    readme = next(e for e in volume.entries if e.name == "DATALOSS_WARNING_README.txt")
    assert readme.size == len(support.README) and not readme.directory


@pytest.mark.skipif(not support.fuse_ok(), reason="needs root, /dev/fuse and ntfs-3g to make directories")
def test_reader_agrees_with_ntfsls_on_a_large_root_with_an_attribute_list(tmp_path):
    """60 files with long names: ntfs-3g moves the root's index to an extension record
    (attribute list) and into INDX blocks: the reader follows both and lists what ntfsls does."""
    path = tmp_path / "vol.img"
    files = {f"user file number {n} with a long name.dat": b"x" * n for n in range(60)}
    support.ntfs_volume(path, 64 * MIB, files=files, dirs=["System Volume Information", "data"])
    assert our_names(path) == ntfsls_names(path)
    assert len(our_names(path)) == 63
    entries = {e.name: e for e in ntfs.read_volume(image(path)).entries}
    assert entries["data"].directory and entries["System Volume Information"].directory


def test_reader_refuses_damage_instead_of_guessing(tmp_path):
    path = tmp_path / "vol.img"
    support.ntfs_volume(path, 32 * MIB)
    data = bytearray(path.read_bytes())
    volume = ntfs._Volume(Image(bytes(data)), 0, len(data))
    root = volume.mft_runs[0][1] * volume.cluster + 5 * volume.record_size
    torn = bytearray(data)
    torn[root + 510:root + 512] = b"\xde\xad"  # the update sequence no longer matches: a torn write
    with pytest.raises(ntfs.NtfsError, match="torn"):
        ntfs.read_volume(Image(bytes(torn)))
    data[3:11] = b"NOTNTFS "
    with pytest.raises(ntfs.NtfsError):
        ntfs.read_volume(Image(bytes(data)))


def test_reader_survives_random_damage(tmp_path):
    """Flipped bytes in the metadata give a verdict or NtfsError, never another exception."""
    path = tmp_path / "vol.img"
    support.ntfs_volume(path, 16 * MIB)
    clean = path.read_bytes()
    rng = random.Random(21)
    for _ in range(150):
        data = bytearray(clean)
        for _ in range(8):
            at = rng.choice([rng.randrange(0, 512), rng.randrange(4 * 4096, 4 * 4096 + 8 * 1024)])
            data[at] = rng.randrange(256)
        try:
            ntfs.read_volume(Image(bytes(data)))
        except ntfs.NtfsError:
            pass


# ------------------------------------------------------------------- what the disk holds


def test_a_disk_as_azure_delivers_it_may_be_formatted(tmp_path):
    result = verdict(azure_disk(tmp_path / "disk.img"))
    assert result.kind == "azure-ntfs" and result.may_format, result


def test_a_gpt_disk_with_the_reserved_partition_first_may_be_formatted(tmp_path):
    result = verdict(azure_disk(tmp_path / "disk.img", gpt=True))
    assert result.kind == "azure-ntfs", result


@pytest.mark.skipif(not support.fuse_ok(), reason="needs root, /dev/fuse and ntfs-3g to make directories")
def test_system_volume_information_is_what_windows_adds(tmp_path):
    result = verdict(azure_disk(tmp_path / "disk.img", dirs=["System Volume Information"]))
    assert result.kind == "azure-ntfs", result


def test_a_user_file_keeps_the_disk_from_being_formatted(tmp_path):
    result = verdict(azure_disk(tmp_path / "disk.img", files={"results.csv": b"1,2,3\n"}))
    assert result.kind == "in-use-ntfs" and not result.may_format
    assert "results.csv" in result.reason


@pytest.mark.parametrize("kwargs, reason", [
    ({"label": "Data"}, "labelled 'Data'"),
    ({"readme": False, "files": {"DATALOSS_WARNING_README.txt.bak": b"x"}}, "besides"),
])
def test_other_ntfs_volumes_are_left_alone(tmp_path, kwargs, reason):
    result = verdict(azure_disk(tmp_path / "disk.img", **kwargs))
    assert not result.may_format and reason in result.reason, result


def test_a_blank_disk_may_be_formatted_but_not_one_with_data_at_its_end(tmp_path):
    path = tmp_path / "disk.img"
    with open(path, "wb") as handle:
        handle.truncate(16 * MIB)
    assert verdict(path).kind == "blank"
    with open(path, "r+b") as handle:  # e.g. an md 0.90 superblock lives near the end
        handle.seek(16 * MIB - 64 * 1024)
        handle.write(b"\xfc\x4e\x2b\xa9")
    assert verdict(path).kind == "unknown"


def test_filesystems_and_tables_azprov_did_not_make_are_left_alone(tmp_path):
    need("mkfs.ext4", "sfdisk")
    path = tmp_path / "disk.img"
    with open(path, "wb") as handle:
        handle.truncate(16 * MIB)
    support.run("mkfs.ext4", "-q", "-F", "-L", "scratch", str(path))
    assert verdict(path).kind == "unknown" and "'scratch'" in verdict(path).reason
    support.run("mkfs.ext4", "-q", "-F", "-L", layout.LABEL, str(path))
    ours = verdict(path)
    assert ours.kind == "ours" and ours.filesystem == "ext4" and not ours.may_format
    with open(path, "wb") as handle:
        handle.truncate(16 * MIB)
    support.run("sfdisk", "-q", str(path), input=b"label: dos\nstart=2048, type=83\n")
    assert verdict(path).kind == "unknown" and "83" in verdict(path).reason
    with open(path, "wb") as handle:
        handle.write(os.urandom(16 * MIB))
    assert verdict(path).kind == "unknown"


# ------------------------------------------------------------- detection on recorded /sys


def test_gen1_resource_disk_is_found_by_its_vmbus_id(tmp_path):
    support.gen1(tmp_path)
    host = Host(str(tmp_path))
    found = {d.name: d for d in sysfs.disks(host)}
    assert found["sda"].role == "root" and found["sdb"].role == "resource"
    assert found["sdc"].role == "data" and found["sdc"].controller == "scsi1" and found["sdc"].lun == 0
    assert found["sdd"].lun == 7
    disk = sysfs.temp_disk(host)
    assert disk.name == "sdb" and "00000000-0001-8899" in disk.why and disk.node == "/dev/sdb"
    assert disk.size == 2 * 1024 * 1024 * 512
    assert sysfs.partitions(host, "sdb") == ["sdb1"]
    assert sysfs.dev_numbers(host, "sdb") == ["8:16", "8:17"]
    assert sysfs.holders(host, "sdb") == []


def test_gen2_resource_disk_is_lun_1_of_scsi0(tmp_path):
    support.gen2(tmp_path)
    host = Host(str(tmp_path))
    found = {d.name: d for d in sysfs.disks(host)}
    assert (found["sda"].role, found["sda"].lun) == ("root", 0)
    assert (found["sdb"].role, found["sdb"].lun) == ("resource", 1)
    assert (found["sdc"].role, found["sdc"].controller, found["sdc"].lun) == ("data", "scsi1", 2)
    assert sysfs.temp_disk(host).name == "sdb"


def test_nvme_temp_disk_by_model_when_there_is_no_scsi_resource_disk(tmp_path):
    support.nvme(tmp_path)
    host = Host(str(tmp_path))
    roles = {d.name: d.role for d in sysfs.disks(host)}
    assert roles == {"nvme0n1": "other", "nvme1n1": "nvme-temp", "nvme2n1": "nvme-temp"}
    assert sysfs.temp_disk(host).name == "nvme1n1"  # the first by name; the second is left alone


def test_disks_that_are_not_azures_are_never_the_temp_disk(tmp_path):
    support.sys_tree(tmp_path, [
        support.Disk("sda", None, "0:0:0:0", vendor="QEMU    ", model="QEMU HARDDISK   "),
        # Msft disk at LUN 1 but on the data controller: a data disk, not the resource disk
        support.Disk("sdb", support.DATA_SCSI1, "1:0:0:1", dev="8:16"),
        # Msft vendor/model without a VMBus device above it
        support.Disk("sdc", None, "2:0:0:1", dev="8:32"),
    ])
    host = Host(str(tmp_path))
    assert sysfs.temp_disk(host) is None
    assert {d.name: d.role for d in sysfs.disks(host)} == {"sda": "other", "sdb": "data", "sdc": "other"}


def test_a_held_disk_is_seen(tmp_path):
    tree = support.gen2(tmp_path)
    (tree.root / "sys/class/block/sdb").resolve().joinpath("sdb1/holders/dm-0").mkdir()
    assert sysfs.holders(Host(str(tmp_path)), "sdb") == ["dm-0"]


# -------------------------------------------------------------------------------- fstab


CLOUD_INIT_LINE = ("/dev/disk/cloud/azure_resource-part1\t/mnt\tauto\tdefaults,nofail,"
                   "x-systemd.after=cloud-init.service,_netdev,comment=cloudconfig\t0\t2")
FSTAB = "\n".join([
    "# /etc/fstab: static file system information.",
    "UUID=0b58668a-ba2e-4a00-b89a-3354b7a547d4 / ext4 discard,errors=remount-ro 0 1",
    "UUID=C83D-C1E5 /boot/efi vfat umask=0077 0 1",
    CLOUD_INIT_LINE,
    "/dev/disk/cloud/azure_resource-part2 none swap sw,comment=cloudconfig 0 0",
    "LABEL=AzureEphmDsk /mnt ext4 defaults,nofail,comment=azure-ephemeral-disk-setup 0 2",
    "/dev/disk/azure/resource-part1 /mnt/resource ext4 defaults 0 0",
    "/dev/disk/azure/scsi1/lun0-part1 /data xfs defaults,nofail 0 2",
    "/dev/disk/azure/scsi1/lun1-part1 /data2 xfs defaults 0 2",
    "/dev/sdc1 /data3 ext4 defaults 0 2",
    "tmpfs /mnt/ram tmpfs defaults 0 0",
    "",
])


def test_other_agents_lines_are_removed_and_nothing_else():
    text, removed = fstab.without_agent_lines(FSTAB)
    assert [e.line for e in removed] == [4, 5, 6, 7]
    assert [fstab.agent_line(e) for e in removed] == ["cloud-init", "cloud-init", "azure-vm-utils",
                                                    "a hand-made mount of the temporary disk"]
    assert text.splitlines() == [line for n, line in enumerate(FSTAB.splitlines(), 1) if n not in (4, 5, 6, 7)]
    assert text.endswith("\n")


def test_risky_lines_are_those_a_new_vm_could_trip_over():
    found = {entry.line: why for entry, why in fstab.risky(FSTAB, "/mnt")}
    assert sorted(found) == [4, 5, 6, 7, 9, 10]
    assert "emergency mode" in found[9] and "/dev/sdc1" in found[10]
    cleaned, _ = fstab.without_agent_lines(FSTAB)
    assert [e.spec for e, _ in fstab.risky(cleaned, "/mnt")] == ["/dev/disk/azure/scsi1/lun1-part1", "/dev/sdc1"]
    assert fstab.risky("/dev/sdb1 /mnt ext4 defaults 0 0\n", "/mnt")[0][1].startswith("mounts /dev/sdb1 on /mnt")


# -------------------------------------------------------------------------------- owner


def waagent(root: Path, conf: str) -> None:
    (root / "usr/sbin").mkdir(parents=True, exist_ok=True)
    (root / "usr/sbin/waagent").write_text("#!/bin/sh\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (root / "lib/systemd/system").mkdir(parents=True, exist_ok=True)
    (root / "lib/systemd/system/walinuxagent.service").write_text("[Service]\n")
    (wants / "walinuxagent.service").symlink_to("/lib/systemd/system/walinuxagent.service")
    (root / "etc/waagent.conf").write_text(conf)


def enable_temp_disk_unit(root: Path) -> None:
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / owner.UNIT).symlink_to(f"/lib/systemd/system/{owner.UNIT}")


def test_owner_is_azprov_alone_by_default(tmp_path):
    enable_temp_disk_unit(tmp_path)
    host = Host(str(tmp_path))
    assert owner.describe(owner.owners(host, True))[0] == "azprov"
    assert owner.describe(owner.owners(host, False))[0] == "none"


def test_waagent_formatting_too_is_a_conflict_and_ubuntus_default_is_not(tmp_path):
    enable_temp_disk_unit(tmp_path)
    waagent(tmp_path, "Provisioning.Agent=disabled\nResourceDisk.Format=y\n")
    host = Host(str(tmp_path))
    who, why = owner.describe(owner.owners(host, True))
    assert who == "conflict" and "ResourceDisk.Format=y" in why
    assert owner.describe(owner.owners(host, False))[0] == "WALinuxAgent"
    (tmp_path / "etc/waagent.conf").write_text("Provisioning.Agent=disabled\nResourceDisk.Format=n\n")
    assert owner.describe(owner.owners(host, True))[0] == "azprov"
    (tmp_path / "etc/waagent.conf").write_text("Provisioning.Agent=disabled\n")  # missing key: no
    assert owner.describe(owner.owners(host, True))[0] == "azprov"


def test_cloud_inits_fstab_line_makes_it_an_owner(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/fstab").write_text(FSTAB)
    assert [o.name for o in owner.owners(Host(str(tmp_path)), False)] == ["cloud-init"]
