"""azprov.fabric.qemu without booting: image formats and firmware of real images made with
sfdisk and qemu-img, the QEMU command line's Azure DMI, and ``fabric boot`` without QEMU."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from azprov.fabric import qemu

needs_tools = pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which("sfdisk") is None,
                                 reason="needs qemu-img (qemu-utils) and sfdisk (fdisk)")


def _disk(path: Path, table: str) -> Path:
    with open(path, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    subprocess.run(["sfdisk", "-q", str(path)], input=table, text=True, check=True, capture_output=True)
    return path


GPT_WITH_ESP = "label: gpt\nsize=16MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\ntype=linux\n"
GPT_NO_ESP = "label: gpt\ntype=linux\n"
MBR = "label: dos\ntype=83, bootable\n"


@needs_tools
@pytest.mark.parametrize("table, firmware, partitioned", [
    (GPT_WITH_ESP, "uefi", True), (GPT_NO_ESP, "bios", True), (MBR, "bios", True), (None, "bios", False)])
def test_firmware_follows_the_partition_table(tmp_path, table, firmware, partitioned):
    path = tmp_path / "disk.raw"
    if table is None:
        path.write_bytes(bytes(1024 * 1024))
    else:
        _disk(path, table)
    info = qemu.inspect_image(path)
    assert (info.format, info.firmware, info.partitioned) == ("raw", firmware, partitioned)


@needs_tools
@pytest.mark.parametrize("fmt, options, expected", [
    ("qcow2", [], "qcow2"), ("vpc", ["-o", "subformat=fixed"], "vpc"), ("vpc", [], "vpc")])
def test_qcow2_and_vhd_images_are_recognised_with_their_firmware(tmp_path, fmt, options, expected):
    raw = _disk(tmp_path / "disk.raw", GPT_WITH_ESP)
    converted = tmp_path / f"disk.{fmt}"
    subprocess.run(["qemu-img", "convert", "-O", fmt, *options, str(raw), str(converted)], check=True)
    info = qemu.inspect_image(converted)
    assert info.format == expected and info.firmware == "uefi"
    assert info.virtual_size >= 64 * 1024 * 1024


def test_a_missing_image_and_an_unknown_format_are_refused(tmp_path):
    with pytest.raises(qemu.VmSetupError, match="no such image"):
        qemu.inspect_image(tmp_path / "absent.raw")


def test_the_command_line_carries_azure_dmi_and_the_gen1_uuid(tmp_path):
    vm_id = str(uuid.uuid4())
    spec = qemu.QemuSpec(disk=tmp_path / "d.qcow2", console=tmp_path / "c", monitor=tmp_path / "m",
                         tap="azvm0", vm_id=vm_id, disc=tmp_path / "disc.iso",
                         extra_args=("-device", "virtio-scsi-pci,id=scsi0"))
    argv = spec.argv()
    smbios = [argv[i + 1] for i, a in enumerate(argv) if a == "-smbios"]
    assert smbios[0].startswith("type=1,manufacturer=Microsoft Corporation,product=Virtual Machine,")
    shown = smbios[0].rsplit("uuid=", 1)[1]
    assert shown != vm_id and str(uuid.UUID(bytes_le=uuid.UUID(shown).bytes)) == vm_id
    assert f"asset={qemu.AZURE_ASSET_TAG}" in smbios[1]
    assert f"file={tmp_path / 'disc.iso'},format=raw,media=cdrom,readonly=on,if=ide" in argv
    assert any("cache=writeback" in a for a in argv) and argv[-2:] == ["-device", "virtio-scsi-pci,id=scsi0"]
    assert argv[argv.index("-machine") + 1] == "pc"
    # a direct kernel boot takes boot index 0 itself: QEMU refuses a second one
    direct = qemu.QemuSpec(disk=tmp_path / "d.qcow2", console=tmp_path / "c", monitor=tmp_path / "m",
                           tap="azvm0", vm_id=vm_id, kernel=tmp_path / "vmlinuz").argv()
    assert "virtio-blk-pci,drive=osdisk" in direct and not any("bootindex" in a for a in direct)


def test_a_gen2_vm_has_its_dvd_on_scsi_and_boots_the_os_disk_first(tmp_path, monkeypatch):
    """Hyper-V's Generation 2 VMs have no IDE controller: the disc is on SCSI.  (That a Debian
    cloud kernel, which has no AHCI driver, then reads it is tests/vm/test_fabric_boot.py's.)"""
    code, variables = tmp_path / "OVMF_CODE.fd", tmp_path / "OVMF_VARS.fd"
    monkeypatch.setattr(qemu, "ovmf", lambda: (code, variables))
    spec = qemu.QemuSpec(disk=tmp_path / "d.qcow2", console=tmp_path / "c", monitor=tmp_path / "m",
                         tap="azvm0", vm_id=str(uuid.uuid4()), disc=tmp_path / "disc.iso", firmware="uefi",
                         efi_vars=tmp_path / "vars.fd")
    argv = spec.argv()
    assert argv[argv.index("-machine") + 1] == "q35"
    assert not any("if=ide" in a for a in argv)
    disc = f"id=disc,file={tmp_path / 'disc.iso'},format=raw,media=cdrom,readonly=on,if=none"
    assert argv[argv.index(disc) - 1] == "-drive"
    assert "scsi-cd,bus=dvd.0,drive=disc" in argv and "virtio-scsi-pci,id=dvd" in argv
    assert "virtio-blk-pci,drive=osdisk,bootindex=0" in argv
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={code}" in argv


def test_fabric_boot_without_qemu_says_what_to_install(monkeypatch, capsys, tmp_path):
    from azprov import cli

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool, path=None: None if tool.startswith("qemu") else real_which(tool, path=path))
    code = cli.main(["fabric", "boot", "--json", str(tmp_path / "image.raw")])
    out = capsys.readouterr().out
    assert code == 3, out
    assert "qemu-system-x86" in out and "qemu-utils" in out and "vm_unavailable" in out
