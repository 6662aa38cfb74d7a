#!/usr/bin/env python3
"""Benchmark: a real VM's first boot with azprov, power-on → Ready and power-on → SSH login.

Boots the VM tests' image (tests/vm/: Debian with the cloud kernel and the real .deb, QEMU on a
qcow2 overlay, Azure's DMI, the provisioning disc, dnsmasq and the fabric emulator at the real
addresses in a private network namespace; direct kernel boot, BIOS) or, with ``--guide``, the
image the guides build (tests/vm/guide_image.py: install-azprov.sh, a GPT disk with GRUB on an
EFI system partition, booted with UEFI firmware, OVMF, like a Generation 2 VM) RUNS times, one VM at a time, each a new VM (own ids,
name and key), and prints per boot and as median / min–max: seconds from QEMU's start to the
first request at the fabric, to the accepted Ready, and to the first working SSH login with the
served key (retried every 2 s, so up to ~2 s late).  Figures, not assertions; a boot without
an accepted Ready or login makes the run invalid (exit 1).  QEMU runs under TCG here (no KVM):
the figures are dominated by software emulation.  Needs root.

  sudo AZPROV_BOOT_CACHE=/work/boot-cache .venv/bin/python benchmarks/vm_boot.py [--runs 3] [--suite trixie | --guide]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from azprov.fabric.vm import VirtualMachine, VmSetup, health_reports  # noqa: E402
from tests.boot import image as images  # noqa: E402
from tests.vm import guide_image, harness  # noqa: E402
from tests.vm import image as vmimages  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--guide", action="store_true", help="the guide-built Gen2 image (UEFI, GRUB), Debian 12")
    args = parser.parse_args()
    workspace = images.Workspace()
    rows = []
    try:
        if args.guide:
            guide = guide_image.guide_disk(workspace, vmimages.build_deb_once(workspace.path))
            key, public = vmimages.new_key(workspace)
            what = "guide-built Gen2 (UEFI, GRUB), bookworm"
        else:
            image, key, public = vmimages.image_and_key(workspace, args.suite)
            what = f"direct kernel (BIOS), {args.suite}"
        print(f"load average before: {os.getloadavg()[0]:.1f}; {what}; {args.runs} boots", flush=True)
        for index in range(args.runs):
            data = harness.scenario(f"azprov-bench-{index}", "benchadmin", [public])
            directory = workspace.path / "vms" / f"boot-{index}"
            disc = harness.ovf_disc(data, directory / "disc", udf=False)
            setup = VmSetup(image=guide, scenario=data, disc=disc) if args.guide else harness.setup(image, data, disc=disc)
            with VirtualMachine(setup, directory) as vm:
                qemu = vm.boot()
                first = ready = None
                deadline = qemu.started + harness.TIMEOUT
                while time.monotonic() < deadline and ready is None and qemu.running:
                    records = vm.records()
                    if records and first is None:
                        first = time.monotonic() - qemu.started
                    if [r for r in health_reports(records, "Ready") if r.get("status") == 200]:
                        ready = time.monotonic() - qemu.started
                    time.sleep(0.1)
                login = vm.wait_for_ssh("benchadmin", key, 120) if ready is not None else None
                login_at = time.monotonic() - qemu.started if login is not None and login.returncode == 0 else None
                vm.shutdown()
            rows.append((first, ready, login_at))
            print(f"boot {index + 1}: first request {first or float('nan'):5.1f} s, Ready {ready or float('nan'):5.1f} s, "
                  f"SSH login {login_at or float('nan'):5.1f} s", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        valid = all(r[1] is not None and r[2] is not None for r in rows)
        for name, column in (("power-on -> first request", 0), ("power-on -> Ready", 1), ("power-on -> SSH login", 2)):
            values = [r[column] for r in rows if r[column] is not None]
            if values:
                print(f"{name:28s} median {statistics.median(values):5.1f} s  (min {min(values):.1f}, max {max(values):.1f})")
        return 0 if valid else 1
    finally:
        workspace.close()


if __name__ == "__main__":
    sys.exit(main())
