"""The image a user builds by following the guides, as a disk a cloud would boot.

Everything else in tests/vm boots a whole-disk ext4 file system with QEMU's direct kernel boot
(fast, but no image a user uploads looks like that).  This module makes what the guides
(docs/images/, docs/examples/packer/) produce and what ``azprov fabric boot`` is for:

1. **The build VM's tree**: the VM tests' Debian 12 package list plus Debian's ``waagent`` (as
   Debian's marketplace image has it), without azprov.
2. **The guides' own steps, verbatim**: docs/examples/packer/install-azprov.sh run as root in the
   tree with the .deb at its default path ``/tmp/azprov.deb`` (it installs azprov and purges
   waagent), then ``azprov deprovision --force --user`` and ``azprov check``, which must pass
   (the image's own azprov).  They run in a container (``systemd-nspawn`` without booting it,
   and without a network: the script's ``apt-get update`` fails to resolve the mirror, which apt
   reports as warnings and exit 0; the .deb's dependencies are in the package list).  A booted build VM,
   the other difference from Packer, is what tests/test_boot_bake.py covers.
3. **A disk for both generations**, laid out as Debian's cloud images are (they boot as Gen1 and
   Gen2 alike): GPT, the root file system on partition 1 (``mkfs.ext4 -d`` at the partition's
   offset) and an EFI system partition (FAT, written with mtools, no mount).
   - UEFI (Generation 2, the Packer example's default SKU ``12-gen2``): GRUB as the
     removable-media loader ``\\EFI\\BOOT\\BOOTX64.EFI`` (``grub-mkstandalone``) finds the root
     file system by its label and reads ``/boot/grub/grub.cfg``.  ``azprov fabric boot`` picks
     UEFI (OVMF) from the EFI system partition.
   - BIOS (Generation 1, ``--firmware bios``): SYSLINUX's GPT MBR code starts the partition
     marked "legacy BIOS bootable", the root, whose EXTLINUX (``extlinux --install`` on the file
     system, mounted from a loop device for that one command) reads ``/boot/extlinux/extlinux.conf``.
     (Debian's images use GRUB here too; ``grub-bios-setup`` refuses an image file, since it
     insists on finding a host device for its own files.)
   Both boot the image's own kernel and initrd with Azure's serial console options.

The disk is cached under ``AZPROV_BOOT_CACHE`` by the base tree's key, the .deb's and the
script's bytes and :data:`RECIPE`; :func:`convert` makes the qcow2 and fixed-VHD copies a user
would upload or feed to ``azprov fabric boot``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import List

from tests.boot import image as images
from tests.boot import nspawn
from tests.boot.image import CACHE, HarnessError, run
from tests.vm import image as vmimages

PACKAGES = vmimages.VM_PACKAGES + ("waagent",)
INSTALL_SCRIPT = images.REPO / "docs/examples/packer/install-azprov.sh"
RECIPE = 3
# Host tools -> Debian package.
GPT_MBR = "/usr/lib/syslinux/mbr/gptmbr.bin"  # boot code that starts the legacy-bootable partition
HOST_TOOLS = {"grub-mkstandalone": "grub-efi-amd64-bin", "mcopy": "mtools", "mkfs.fat": "dosfstools",
              "sfdisk": "fdisk", "extlinux": "extlinux", GPT_MBR: "syslinux-common"}

MIB = 1024 * 1024
SECTOR = 512
DISK_BYTES = vmimages.DISK_BYTES
LABEL = vmimages.LABEL
# (start, size) in MiB; the root file system takes partition 1 from ROOT_START to the end.
ESP = (1, 64)
ROOT_START = 65
GPT_BACKUP_SECTORS = 34
TYPES = {"root": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"}
GRUB_MODULES = ("part_gpt", "ext2", "search", "search_label", "configfile", "normal",
                "linux", "echo", "test", "serial", "terminal")
# What GRUB runs first (embedded in BOOTX64.EFI): find the root file system, then its own grub.cfg.
EARLY_CONFIG = f"""\
search --no-floppy --label {LABEL} --set=root
set prefix=($root)/boot/grub
configfile ($root)/boot/grub/grub.cfg
"""
# Azure's kernel options for the serial console (ttyS0 is the last console, so /dev/console).
KERNEL_OPTIONS = f"root=LABEL={LABEL} ro console=tty0 console=ttyS0,115200n8 earlyprintk=ttyS0 panic=-1"
FSTAB = f"LABEL={LABEL} / ext4 rw,discard,errors=remount-ro 0 1\n"


def missing_tools() -> List[str]:
    """Debian packages this module needs on the host (empty when all are present)."""
    return sorted({package for tool, package in HOST_TOOLS.items()
                   if not (Path(tool).is_file() if tool.startswith("/")
                           else shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"))})


def _key(base_key: str, deb: Path) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"base": base_key, "recipe": RECIPE, "disk": DISK_BYTES,
                              "early": EARLY_CONFIG, "options": KERNEL_OPTIONS}).encode())
    for path in (deb, INSTALL_SCRIPT):
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _in_tree(tree: Path, argv, what: str, timeout: float = 600) -> str:
    result = nspawn.run_in(tree, argv, setenv={"DEBIAN_FRONTEND": "noninteractive"}, timeout=timeout)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise HarnessError(f"{what} in the build tree exited {result.returncode}:\n{output[-6000:]}")
    return output


def follow_the_guide(tree: Path, deb: Path) -> str:
    """The guides' steps in ``tree``: the install script with the .deb, then the image's own
    ``azprov deprovision --force --user`` and ``azprov check`` (which must pass).  Returns what
    they printed."""
    upload = tree / "var/tmp/azprov-guide"  # not /tmp: nspawn mounts a tmpfs there
    upload.mkdir(parents=True)
    shutil.copy2(deb, upload / "azprov.deb")
    shutil.copy2(INSTALL_SCRIPT, upload / "install-azprov.sh")
    # Packer's file provisioner puts the package at /tmp/azprov.deb, the script's default.
    script = ("install -m 0644 /var/tmp/azprov-guide/azprov.deb /tmp/azprov.deb && "
              "bash /var/tmp/azprov-guide/install-azprov.sh")
    output = _in_tree(tree, ["bash", "-c", script], "install-azprov.sh")
    shutil.rmtree(upload)
    output += _in_tree(tree, ["azprov", "deprovision", "--force", "--user"], "azprov deprovision")
    return output + _in_tree(tree, ["azprov", "check"], "azprov check (exit 10: not ready for capture)")


def _boot_config(tree: Path) -> None:
    """GRUB's and EXTLINUX's configuration for the image's one kernel, and the fstab."""
    kernel, initrd = vmimages.boot_files(tree)
    grub = tree / "boot/grub"
    grub.mkdir(parents=True, exist_ok=True)
    (grub / "grub.cfg").write_text(
        "# azprov VM tests: the guide-built image's boot entry\n"
        "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n"
        "set timeout=0\nset default=0\n"
        f"menuentry 'Debian GNU/Linux (azprov image)' {{\n"
        f"    linux /boot/{kernel} {KERNEL_OPTIONS}\n"
        f"    initrd /boot/{initrd}\n}}\n")
    extlinux = tree / "boot/extlinux"
    extlinux.mkdir(exist_ok=True)
    (extlinux / "extlinux.conf").write_text(
        "# azprov VM tests: the guide-built image's boot entry\n"
        "SERIAL 0 115200\nDEFAULT azprov\nTIMEOUT 0\nLABEL azprov\n"
        f"  LINUX /boot/{kernel}\n  INITRD /boot/{initrd}\n  APPEND {KERNEL_OPTIONS}\n")
    (tree / "etc/fstab").write_text(FSTAB)
    (tree / "etc/systemd/network/50-azprov-vm.network").write_text(vmimages.NETWORK)
    run(["systemctl", f"--root={tree}", "enable", "systemd-networkd.service", "systemd-resolved.service"])


def _partition(disk: Path) -> None:
    root_sectors = (DISK_BYTES // SECTOR - GPT_BACKUP_SECTORS) - ROOT_START * MIB // SECTOR
    table = "\n".join([
        "label: gpt",
        f"start={ROOT_START * MIB // SECTOR}, size={root_sectors}, type={TYPES['root']}, name=root",
        f"start={ESP[0] * MIB // SECTOR}, size={ESP[1] * MIB // SECTOR}, type={TYPES['esp']}, name=esp",
    ]) + "\n"
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)], input=table)


def _root_filesystem(disk: Path, tree: Path) -> None:
    size_kib = (DISK_BYTES - ROOT_START * MIB - GPT_BACKUP_SECTORS * SECTOR) // 1024
    run(["mkfs.ext4", "-q", "-F", "-L", LABEL, "-d", str(tree), "-E", f"offset={ROOT_START * MIB}",
         str(disk), f"{size_kib}k"], timeout=900)


def _efi_system_partition(disk: Path, work: Path) -> None:
    (work / "early.cfg").write_text(EARLY_CONFIG)
    loader = work / "BOOTX64.EFI"
    run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(loader), "--modules", " ".join(GRUB_MODULES),
         f"boot/grub/grub.cfg={work / 'early.cfg'}"], timeout=300)
    esp = work / "esp.img"
    run(["mkfs.fat", "-F", "32", "-n", "ESP", "-C", str(esp), str(ESP[1] * 1024)])
    mtools = ["-i", str(esp)]
    run(["mmd", *mtools, "::/EFI", "::/EFI/BOOT"])
    run(["mcopy", *mtools, str(loader), "::/EFI/BOOT/BOOTX64.EFI"])
    run(["dd", f"if={esp}", f"of={disk}", "bs=1M", f"seek={ESP[0]}", "conv=notrunc,fsync", "status=none"])


def _bios_boot(disk: Path, work: Path) -> None:
    """EXTLINUX in the root file system (it must be mounted for that), the partition marked
    legacy-BIOS-bootable, SYSLINUX's GPT boot code in the MBR's first 440 bytes."""
    mountpoint = work / "root"
    mountpoint.mkdir()
    run(["mount", "-o", f"loop,offset={ROOT_START * MIB}", str(disk), str(mountpoint)])
    try:
        run(["extlinux", "--install", str(mountpoint / "boot/extlinux")])
    finally:
        run(["umount", str(mountpoint)])
        mountpoint.rmdir()
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--part-attrs", str(disk), "1",
         "LegacyBIOSBootable"])
    run(["dd", f"if={GPT_MBR}", f"of={disk}", "bs=440", "count=1", "conv=notrunc,fsync", "status=none"])


def guide_disk(workspace: images.Workspace, deb: Path) -> Path:
    """The cached raw disk of the guide-built image (built now if absent)."""
    missing = missing_tools()
    if missing:
        raise HarnessError(f"the guide-built disk needs: apt-get install {' '.join(missing)}")
    base = images.base_tree(PACKAGES)
    directory = CACHE / f"guide-{_key(images.cache_key(PACKAGES), deb)}"
    disk = directory / "disk.raw"

    def build(building: Path) -> dict:
        overlay = workspace.overlay([base], "guide-build")
        try:
            (building / "guide.log").write_text(follow_the_guide(overlay.root, deb))
            _boot_config(overlay.root)
            with open(building / "disk.raw", "wb") as raw:
                raw.truncate(DISK_BYTES)
            _partition(building / "disk.raw")
            _root_filesystem(building / "disk.raw", overlay.root)
        finally:
            overlay.unmount()
        _efi_system_partition(building / "disk.raw", building)
        _bios_boot(building / "disk.raw", building)
        for scratch in ("early.cfg", "BOOTX64.EFI", "esp.img"):
            (building / scratch).unlink()
        return {"deb": deb.name}

    vmimages.build_once(directory, build)
    return disk


def convert(raw: Path, target: Path, fmt: str) -> Path:
    """A copy of ``raw`` as ``qcow2`` or a fixed VHD (``vpc``, the format Azure takes)."""
    options = ["-o", "subformat=fixed,force_size=on"] if fmt == "vpc" else []
    run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *options, str(raw), str(target)], timeout=600)
    return target


def root_partition(raw: Path) -> str:
    """The root file system of a raw copy of the disk, for e2fsprogs (``DISK?offset=BYTES``)."""
    return f"{raw}?offset={ROOT_START * MIB}"
