"""The disk image the VM tests boot: Debian with its cloud kernel, azprov's .deb, networkd.

:func:`vm_image` returns a :class:`VmImage` (a raw disk whose whole is one ext4 file system,
plus the image's own kernel and initrd for a direct kernel boot), cached under
``AZPROV_BOOT_CACHE`` as ``vm-<hash>/`` where the hash covers the base tree's key, the .deb's
bytes and :data:`RECIPE`.  It is made from the boot tests' cached mmdebstrap tree with
:data:`VM_PACKAGES` (:func:`tests.boot.image.base_tree`), the .deb installed and the tree
generalized by :func:`tests.boot.image.make_image` (no recorder unit: the VM tests look at a
running VM over SSH), then the VM's own settings: systemd-networkd doing DHCP on the virtio NIC,
an fstab, and ``mkfs.ext4 -d`` (no loop device, no mount).

Variants (:func:`variant`) are copies with one change written by ``debugfs -w`` (a unit
disabled, a broken sshd drop-in), for the images ``azprov fabric boot`` must refuse.

Reading a disk afterwards: :func:`fsck` (``e2fsck -fn``) and :func:`read_file` /
:func:`exists` (``debugfs``), no mount; a partition is read as ``"DISK?offset=BYTES"``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

from tests.boot import image as images
from tests.boot.image import CACHE, CLEAN_ENV, HarnessError, run

VM_PACKAGES = images.PACKAGES + ("linux-image-cloud-amd64", "initramfs-tools", "systemd-resolved")
RECIPE = 1
DISK_BYTES = 3 * 1024 ** 3
LABEL = "azprov-root"
APPEND = "root=/dev/vda rw console=ttyS0 panic=-1"
NETWORK = """\
# azprov VM tests: DHCP on the virtio NIC, as a Debian cloud image does.
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
"""
FSTAB = f"LABEL={LABEL} / ext4 rw,errors=remount-ro 0 1\n"
# What the readers below take: a raw disk that is one ext4 file system, or "DISK?offset=BYTES"
# (e2fsprogs' own syntax) for one on a partition of a raw disk.
Filesystem = Union[Path, str]


@dataclass(frozen=True)
class VmImage:
    disk: Path  # raw, one ext4 file system
    kernel: Path
    initrd: Path
    suite: str
    append: str = APPEND


def build_deb_once(workdir: Path) -> Path:
    given = os.environ.get("AZPROV_BOOT_DEB")
    return Path(given) if given else images.build_deb(workdir / "dist")


def _key(base_key: str, deb: Path, suite: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"base": base_key, "recipe": RECIPE, "suite": suite,
                              "disk": DISK_BYTES}).encode())
    digest.update(hashlib.sha256(deb.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _customize(root: Path) -> None:
    network = root / "etc/systemd/network/50-azprov-vm.network"
    network.write_text(NETWORK)
    (root / "etc/fstab").write_text(FSTAB)
    run(["systemctl", f"--root={root}", "enable", "systemd-networkd.service", "systemd-resolved.service"])
    # An image pipeline's last step: nothing of the build's own network left behind.
    for lease in (root / "var/lib/dhcp").glob("*.leases") if (root / "var/lib/dhcp").is_dir() else []:
        lease.unlink()


def boot_files(tree: Path) -> Tuple[str, str]:
    """The names of the tree's one kernel and one initrd in /boot."""
    kernels = sorted(p.name for p in (tree / "boot").glob("vmlinuz-*"))
    initrds = sorted(p.name for p in (tree / "boot").glob("initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise HarnessError(f"expected one kernel and one initrd in /boot: {kernels} {initrds}")
    return kernels[0], initrds[0]


def build_once(directory: Path, build: Callable[[Path], dict]) -> None:
    """Fill the cache entry ``directory`` unless it is complete: under the cache's lock,
    ``build(building)`` fills a fresh directory, which gets a ``complete`` marker (what ``build``
    returned, as JSON) and is renamed into place; a half-built entry is removed first."""
    with open(CACHE / "vm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (directory / "complete").exists():
            return
        if directory.exists():
            shutil.rmtree(directory)
        building = Path(tempfile.mkdtemp(prefix=f"{directory.name}-building-", dir=CACHE))
        try:
            described = build(building)
            (building / "complete").write_text(json.dumps(described) + "\n")
            os.rename(building, directory)
        finally:
            if building.exists():
                shutil.rmtree(building)


def vm_image(workspace: images.Workspace, deb: Path, suite: str = images.SUITE) -> VmImage:
    """The cached VM image for ``deb`` on Debian ``suite`` (built now if absent)."""
    base = images.base_tree(VM_PACKAGES, suite)
    key = _key(images.cache_key(VM_PACKAGES, suite), deb, suite)
    directory = CACHE / f"vm-{key}"
    found = VmImage(directory / "disk.raw", directory / "vmlinuz", directory / "initrd.img", suite)

    def build(building: Path) -> dict:
        layers = images.make_image(workspace, base, deb, name=f"vm-{suite}", recorder=False)
        overlay = workspace.overlay(layers, f"vm-{suite}-disk")
        try:
            _customize(overlay.root)
            kernel, initrd = boot_files(overlay.root)
            shutil.copyfile(overlay.root / "boot" / kernel, building / "vmlinuz")
            shutil.copyfile(overlay.root / "boot" / initrd, building / "initrd.img")
            with open(building / "disk.raw", "wb") as disk:
                disk.truncate(DISK_BYTES)
            run(["mkfs.ext4", "-q", "-F", "-L", LABEL, "-d", str(overlay.root), str(building / "disk.raw")],
                timeout=600)
        finally:
            overlay.unmount()
        return {"suite": suite, "deb": deb.name}

    build_once(directory, build)
    return found


def variant(source: VmImage, target: Path, commands: List[str]) -> VmImage:
    """A copy of ``source``'s disk with ``debugfs -w`` ``commands`` applied (same kernel)."""
    run(["cp", "--sparse=always", str(source.disk), str(target)], timeout=300)
    script = target.with_suffix(".debugfs")
    script.write_text("\n".join(commands) + "\n")
    result = run(["debugfs", "-w", "-f", str(script), str(target)])
    if "not found" in result.stderr.lower() or "couldn't" in result.stderr.lower():
        raise HarnessError(f"debugfs on {target}: {result.stderr}")
    return VmImage(target, source.kernel, source.initrd, source.suite, source.append)


def fsck(raw: Filesystem) -> subprocess.CompletedProcess:
    """``e2fsck -fn``: 0 when the file system is clean (nothing changed: ``-n``)."""
    return run(["e2fsck", "-fn", str(raw)], check=False, timeout=300)


def read_file(raw: Filesystem, path: str) -> Optional[str]:
    """A file of the ext4 disk ``raw`` (None if absent), read with debugfs."""
    if not exists(raw, path):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "file"
        run(["debugfs", "-R", f"dump {path} {out}", str(raw)])
        return out.read_bytes().decode("utf-8", "replace")


def stat(raw: Filesystem, path: str) -> str:
    return run(["debugfs", "-R", f"stat {path}", str(raw)]).stdout


def exists(raw: Filesystem, path: str) -> bool:
    result = subprocess.run(["debugfs", "-R", f"stat {path}", str(raw)], capture_output=True, text=True,
                            env=CLEAN_ENV, timeout=60)
    return result.returncode == 0 and "File not found" not in result.stderr and "Inode:" in result.stdout


def listdir(raw: Filesystem, path: str) -> List[str]:
    """Names in directory ``path`` of the ext4 disk ``raw`` (debugfs ``ls -p``), without . and .."""
    result = subprocess.run(["debugfs", "-R", f"ls -p {path}", str(raw)], capture_output=True, text=True,
                            env=CLEAN_ENV, timeout=60)
    names = []
    for line in result.stdout.splitlines():
        fields = line.strip().split("/")
        if len(fields) >= 7 and fields[5] not in (".", ".."):
            names.append(fields[5])
    return names


def image_and_key(workspace: images.Workspace, suite: str = images.SUITE) -> Tuple[VmImage, Path, str]:
    """What a benchmark boots: the VM image for this checkout's .deb on ``suite``, and a fresh
    ed25519 key in the workspace (its private key's path and its public line)."""
    image = vm_image(workspace, build_deb_once(workspace.path), suite)
    return (image, *new_key(workspace))


def new_key(workspace: images.Workspace) -> Tuple[Path, str]:
    """A fresh ed25519 key in the workspace: its private key's path and its public line."""
    key = workspace.path / "key"
    images.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    return key, key.with_suffix(".pub").read_text().strip()
