"""Fixtures of the VM tests: the workspace, the .deb, the cached images, SSH keys.

The tests need root (network namespaces, a tap, overlay mounts to build the image) and QEMU;
without them they are skipped with the reason (never passed).  ``AZPROV_VM_KEEP=1`` keeps each
VM's directory (console logs, the emulator's and dnsmasq's logs, the disk overlay).
Every test module here sets ``pytestmark = harness.MARKS``: ``vm``, and ``boot`` too (slow and root-only
like the nspawn boot tests, so ``-m "not boot"`` leaves them out).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import pytest

from azprov.fabric import qemu
from tests.boot import image as images
from tests.vm import image as vmimages


@pytest.fixture(scope="session")
def vm_workspace():
    if os.geteuid() != 0:
        pytest.skip("VM tests need root (network namespaces, a tap, overlay mounts)")
    missing = qemu.missing_tools()
    if missing:
        pytest.skip(f"VM tests need QEMU: apt-get install {' '.join(missing)}")
    problem = images.install_tools()
    if problem:
        pytest.skip(f"VM tests need mmdebstrap: {problem}")
    workspace = images.Workspace(keep=os.environ.get("AZPROV_VM_KEEP") == "1")
    try:
        yield workspace
    finally:
        workspace.close()
        if workspace.keep:
            print(f"\nVM tests: kept {workspace.path}")


@pytest.fixture(scope="session")
def vm_deb(vm_workspace) -> Path:
    return vmimages.build_deb_once(vm_workspace.path)


@pytest.fixture(scope="session")
def bookworm(vm_workspace, vm_deb) -> vmimages.VmImage:
    return vmimages.vm_image(vm_workspace, vm_deb, "bookworm")


@pytest.fixture(scope="session")
def trixie(vm_workspace, vm_deb) -> vmimages.VmImage:
    return vmimages.vm_image(vm_workspace, vm_deb, "trixie")


@pytest.fixture(scope="session")
def vm_key(vm_workspace) -> Tuple[Path, str]:
    """A fresh ed25519 key pair: (private key file, public key line)."""
    private = vm_workspace.path / "vm-keys" / "admin"
    private.parent.mkdir(exist_ok=True)
    images.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vm-test", "-f", str(private)])
    return private, private.with_suffix(".pub").read_text().strip()


@pytest.fixture
def vm_dir(vm_workspace, request) -> Path:
    """A directory of its own for each test's VM(s)."""
    path = vm_workspace.path / "vms" / request.node.name.replace("/", "_")[:80]
    path.mkdir(parents=True)
    return path
