"""QEMU for an emulated Azure VM: the disk image, the firmware, the command line, the process.

- :func:`inspect_image` finds an image's format (``qemu-img info``; a fixed VHD, which is raw
  data plus a 512-byte ``conectix`` footer, is ``vpc``) and its firmware: a GPT disk with an EFI
  system partition boots with UEFI (OVMF, like a Generation 2 VM), anything else with BIOS
  (Generation 1).
- :func:`make_overlay` puts a qcow2 overlay over the image, so a boot never writes to it.
- :class:`QemuSpec` / :meth:`QemuSpec.argv`: Azure's DMI (``-smbios`` type 1 with Microsoft's
  manufacturer and product and the VM id as the system UUID, type 3 with Azure's chassis asset
  tag), the disk on virtio, first in the firmware's boot order as Azure's OS disk is
  (``cache=writeback``: a SIGKILL loses what the guest had not written out, like a power cut),
  the provisioning disc on the DVD drive of the VM's generation (IDE for Gen1, SCSI for Gen2),
  a virtio NIC on a tap, the serial console to a file, extra devices (a SCSI data disk ...) as
  given.
- :class:`Qemu`: the running emulator (started inside the VM's network namespace); ``kill()`` is
  the power cut, ``powerdown()`` presses the ACPI power button through the monitor socket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from azprov.fabric.vmnet import VmSetupError, run

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
# What to install when a tool is missing (Debian/Ubuntu package names).
PACKAGES = {QEMU: "qemu-system-x86", QEMU_IMG: "qemu-utils", "dnsmasq": "dnsmasq-base", "ip": "iproute2"}
OVMF_CODE = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd",
             "/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/qemu/OVMF.fd")
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
FORMATS = ("raw", "qcow2", "vpc")
SECTOR = 512


def missing_tools(firmware: str = "bios") -> List[str]:
    """Packages to install before a VM can boot here (empty when everything is present)."""
    packages = sorted({package for tool, package in PACKAGES.items()
                       if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None})
    if firmware == "uefi" and ovmf() is None:
        packages.append("ovmf")
    return packages


def ovmf() -> Optional[Tuple[Path, Path]]:
    """(code, vars template) of an installed OVMF, or None."""
    for code in OVMF_CODE:
        code_path = Path(code)
        variables = code_path.with_name(code_path.name.replace("CODE", "VARS"))
        if code_path.is_file() and variables.is_file():
            return code_path, variables
    return None


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    format: str  # raw, qcow2 or vpc
    virtual_size: int
    firmware: str  # bios or uefi
    partitioned: bool


def _gpt_has_esp(head: bytes) -> Optional[bool]:
    """From the first 34 sectors: None without a GPT, else whether an EFI system partition is in it."""
    if head[SECTOR:SECTOR + 8] != b"EFI PART":
        return None
    entries_lba = int.from_bytes(head[SECTOR + 72:SECTOR + 80], "little")
    count = min(int.from_bytes(head[SECTOR + 80:SECTOR + 84], "little"), 128)
    size = int.from_bytes(head[SECTOR + 84:SECTOR + 88], "little")
    if entries_lba != 2 or size < 128 or size > 512:
        return False
    for index in range(count):
        offset = entries_lba * SECTOR + index * size
        entry = head[offset:offset + 16]
        if len(entry) == 16 and str(uuid.UUID(bytes_le=entry)) == ESP_TYPE:
            return True
    return False


def _has_mbr(head: bytes) -> bool:
    return head[510:512] == b"\x55\xaa" and any(head[446 + 16 * i + 4] for i in range(4))


def inspect_image(path: Path) -> ImageInfo:
    """Format, size and firmware of a disk image (raw, qcow2 or fixed/dynamic VHD)."""
    path = Path(path)
    if not path.is_file():
        raise VmSetupError(f"{path}: no such image file")
    info = json.loads(run([QEMU_IMG, "info", "--output=json", str(path)]).stdout)
    fmt = info.get("format")
    if fmt == "raw" and path.stat().st_size >= SECTOR:
        with open(path, "rb") as f:
            f.seek(-SECTOR, os.SEEK_END)
            if f.read(8) == b"conectix":  # a fixed VHD: raw data, then the footer
                fmt = "vpc"
    if fmt not in FORMATS:
        raise VmSetupError(f"{path}: {fmt} images are not supported (raw, qcow2 or VHD)")
    if fmt == "raw":
        with open(path, "rb") as f:
            head = f.read(34 * SECTOR)
    else:
        with _temporary(path.parent, ".head") as out:
            run([QEMU_IMG, "dd", "-f", fmt, "-O", "raw", f"if={path}", f"of={out}", f"bs={SECTOR}", "count=34"])
            head = out.read_bytes()
    esp = _gpt_has_esp(head)
    size = int(info.get("virtual-size") or 0)
    if fmt == "vpc" and info.get("format") == "raw":
        size -= SECTOR
    return ImageInfo(path, fmt, size, "uefi" if esp else "bios", esp is not None or _has_mbr(head))


class _temporary:
    def __init__(self, directory: Path, suffix: str) -> None:
        self.path = Path(directory) / f".azprov-{os.getpid()}-{os.urandom(3).hex()}{suffix}"

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc_info) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def make_overlay(image: ImageInfo, overlay: Path) -> Path:
    """A qcow2 file backed by ``image``: the VM writes there, the image stays as it was."""
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", str(image.path.resolve()), "-F", image.format, str(overlay)])
    return overlay


def gen1_uuid(vm_id: str) -> str:
    """The SMBIOS UUID a Generation 1 VM shows for ``vm_id`` (first three fields byte-swapped)."""
    return str(uuid.UUID(bytes=uuid.UUID(vm_id).bytes_le))


@dataclass
class QemuSpec:
    """How to start one VM."""

    disk: Path  # qcow2 overlay (or any qcow2) the VM boots from
    console: Path  # serial console output
    monitor: Path  # HMP monitor socket
    tap: str
    vm_id: str
    firmware: str = "bios"
    disc: Optional[Path] = None  # provisioning disc (ISO9660/UDF image) on the IDE CD-ROM
    kernel: Optional[Path] = None  # direct kernel boot (an image without a boot loader)
    initrd: Optional[Path] = None
    append: str = ""
    memory_mib: int = 1024
    cpus: int = 1
    accel: str = "tcg"
    mac: str = "00:0d:3a:10:20:30"  # a Microsoft (Azure) OUI
    efi_vars: Optional[Path] = None  # a private copy of OVMF's variable store
    extra_args: Sequence[str] = field(default_factory=tuple)  # more -device/-drive ... options

    def argv(self) -> List[str]:
        uuid_shown = self.vm_id if self.firmware == "uefi" else gen1_uuid(self.vm_id)
        argv = [
            QEMU, "-name", "azprov-vm", "-machine", "q35" if self.firmware == "uefi" else "pc",
            "-accel", self.accel, "-m", str(self.memory_mib), "-smp", str(self.cpus),
            "-display", "none", "-vga", "none", "-no-reboot", "-nodefaults",
            "-serial", f"file:{self.console}",
            "-monitor", f"unix:{self.monitor},server,nowait",
            "-smbios", f"type=1,manufacturer=Microsoft Corporation,product=Virtual Machine,"
                       f"version=7.0,uuid={uuid_shown}",
            "-smbios", f"type=3,manufacturer=Microsoft Corporation,asset={AZURE_ASSET_TAG}",
            "-drive", f"id=osdisk,file={self.disk},format=qcow2,if=none,cache=writeback",
            # first in the boot order (a direct kernel boot holds index 0 itself)
            "-device", "virtio-blk-pci,drive=osdisk" + ("" if self.kernel else ",bootindex=0"),
            "-netdev", f"tap,id=nic0,ifname={self.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=nic0,mac={self.mac}",
            "-device", "virtio-rng-pci",
        ]
        if self.disc is not None:
            argv += self.disc_argv()
        if self.firmware == "uefi":
            found = ovmf()
            if found is None or self.efi_vars is None:
                raise VmSetupError("UEFI boot needs OVMF (Debian package ovmf)")
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={found[0]}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={self.efi_vars}"]
        if self.kernel is not None:
            argv += ["-kernel", str(self.kernel)]
            if self.initrd is not None:
                argv += ["-initrd", str(self.initrd)]
            argv += ["-append", self.append]
        return argv + list(self.extra_args)

    def disc_argv(self) -> List[str]:
        """The provisioning disc where the VM's generation has its DVD drive: a Generation 1 VM
        on the IDE controller (PIIX, ``ata_piix``), a Generation 2 VM, which has no IDE
        controller, on a SCSI controller (``virtio_scsi``; Hyper-V's is storvsc): distribution
        cloud kernels leave out drivers Azure does not need (Debian 12's has no AHCI), so an
        AHCI drive would hide the disc from an image that works on Azure."""
        media = f"file={self.disc},format=raw,media=cdrom,readonly=on"
        if self.firmware != "uefi":
            return ["-drive", f"{media},if=ide"]
        return ["-device", "virtio-scsi-pci,id=dvd", "-drive", f"id=disc,{media},if=none",
                "-device", "scsi-cd,bus=dvd.0,drive=disc"]


class Qemu:
    """A running QEMU started with ``launcher + spec.argv()`` (the launcher enters the namespace)."""

    def __init__(self, spec: QemuSpec, launcher: Sequence[str], stderr: Path) -> None:
        self.spec = spec
        self.stderr = stderr
        if spec.firmware == "uefi" and spec.efi_vars is not None and not spec.efi_vars.exists():
            found = ovmf()
            if found is None:
                raise VmSetupError("UEFI boot needs OVMF (Debian package ovmf)")
            shutil.copyfile(found[1], spec.efi_vars)
        for stale in (spec.console, spec.monitor):
            if stale.exists():
                stale.unlink()
        self.started = time.monotonic()
        with open(stderr, "a") as err:
            self.process = subprocess.Popen([*launcher, *spec.argv()], stdin=subprocess.DEVNULL,
                                            stdout=err, stderr=err, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def console(self) -> str:
        try:
            return self.spec.console.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """The power cut: SIGKILL, nothing the guest had not written out reaches the disk."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def monitor(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.spec.monitor))
            sock.sendall(command.encode() + b"\n")
            time.sleep(0.2)

    def powerdown(self, timeout: float = 90) -> bool:
        """Press the ACPI power button and wait for the guest to power off; True if it did."""
        if not self.running:
            return True
        try:
            self.monitor("system_powerdown")
        except OSError:
            pass
        return self.wait(timeout)

    def wait(self, timeout: float) -> bool:
        try:
            self.process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 90) -> None:
        """Power off cleanly if possible, else kill."""
        if not self.powerdown(timeout):
            self.kill()
