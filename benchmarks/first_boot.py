#!/usr/bin/env python3
"""Benchmark: where a real first boot's time goes, N boots, medians (figures, not assertions).

Boots the boot tests' Debian 12 image (tests/boot/: mmdebstrap base tree, the real .deb,
systemd-nspawn in a private network namespace with the fabric emulator at the real addresses)
RUNS times on a fresh overlay each, and prints for every milestone and step of
tests/boot/timing.py the median, min and max in milliseconds: from unit start to the first
request, each step, READY=1, Ready received by the fabric, sshd started.

With ``--baseline REV`` (a git revision, built into its own .deb from ``git archive``) or
``--baseline-deb FILE``, the baseline and this tree's package are booted alternately in the
same run, so that both see the same machine load; the load average is printed before and after.

With ``--disc``, every boot has the scenario's provisioning disc attached (UDF, as ``/dev/sr0``):
the early stage (``azprov-hostname.service``, before the network) then reads it and sets the host
name, and its time shows as "early stage takes".

With ``--host-keys-present``, each package is also booted on the same image with SSH host keys
already in place (made with ``ssh-keygen -A`` before the boot, not timed), alternately: first-boot
time with and without host-key generation, whose random RSA prime search otherwise dominates
the comparison of two packages.

Needs root (as the boot tests).  Usage:
  sudo AZPROV_BOOT_CACHE=/work/bootcache .venv/bin/python benchmarks/first_boot.py \\
      [--runs 5] [--baseline REV | --baseline-deb FILE] [--deb FILE] [--host-keys-present] [--disc]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests.boot import disc as discs  # noqa: E402
from tests.boot import image as images  # noqa: E402
from tests.boot import timing  # noqa: E402
from tests.boot.fabric import boot_with_fabric  # noqa: E402

HEADLINE = ("unit start (from boot)", "first request reached the fabric", "READY=1 (systemd: azprov active)",
            "Ready received by the fabric", "sshd started (ready)")


def scenario(public_key: str, run: int) -> dict:
    name = f"azprov-bench-{run}"
    return {
        "description": f"first-boot benchmark, run {run}",
        "vm_id": str(uuid.uuid4()),
        "vm_name": f"{name}-resource",
        "computer_name": name,
        "admin_username": "benchadmin",
        "incarnation": 1,
        "container_id": str(uuid.uuid4()),
        "instance_id": f"{uuid.uuid4()}._{name}-resource",
        "public_keys": [public_key],
    }


def deb_of_revision(revision: str, workdir: Path) -> Path:
    """The .deb of ``revision``, built from ``git archive`` (committed files only)."""
    source = Path(tempfile.mkdtemp(prefix="baseline-src-", dir=workdir))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    return images.build_deb(workdir / "dist-baseline", source=source)


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="boots per package (default 5)")
    parser.add_argument("--deb", type=Path, help="boot this package instead of building this tree's")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--baseline", metavar="REV", help="also boot the package of this git revision")
    group.add_argument("--baseline-deb", type=Path, metavar="FILE", help="also boot this package")
    parser.add_argument("--host-keys-present", action="store_true",
                        help="also boot each package with the host keys already generated")
    parser.add_argument("--disc", action="store_true",
                        help="attach the provisioning disc to every boot (the early stage reads it)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("first_boot.py boots images with systemd-nspawn: run it as root")
    problem = images.install_tools()
    if problem:
        raise SystemExit(problem)

    workspace = images.Workspace(keep=os.environ.get("AZPROV_BOOT_KEEP") == "1")
    try:
        work = workspace.path
        debs = {"azprov": args.deb or images.build_deb(work / "dist")}
        if args.baseline:
            debs = {"baseline": deb_of_revision(args.baseline, work), **debs}
        elif args.baseline_deb:
            debs = {"baseline": args.baseline_deb, **debs}
        base = images.base_tree()
        layers = {name: images.make_image(workspace, base, deb, name=f"image-{name}") for name, deb in debs.items()}
        if args.host_keys_present:  # the same images; host keys generated into each tree before its boot
            for name in list(debs):
                debs[f"{name}+keys"], layers[f"{name}+keys"] = debs[name], layers[name]
        key_file = work / "bench-key"
        images.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)])
        public_key = key_file.with_suffix(".pub").read_text().strip()

        figures: Dict[str, List[Dict[str, float]]] = {name: [] for name in debs}
        load_before, started = load(), time.monotonic()
        for run in range(args.runs):
            for name in debs:  # alternately, so that both see the same load
                label = f"{name}-{run}"
                tree = workspace.overlay(layers[name], label).root
                if name.endswith("+keys"):
                    images.run(["ssh-keygen", "-A", "-f", str(tree)])
                served = scenario(public_key, run)
                if args.disc:
                    with discs.attached(discs.provisioning_disc(served, work / label)) as attach:
                        booted, requests = boot_with_fabric(tree, served, work, label, nspawn_args=attach)
                else:
                    booted, requests = boot_with_fabric(tree, served, work, label)
                ready = [r for r in requests if r.get("endpoint") == "health"
                         and (r.get("report") or {}).get("state") == "Ready" and r.get("status") == 200]
                if name.endswith("+keys") and "generated SSH host keys" in str(booted.journal):
                    raise SystemExit(f"{label}: azprov generated host keys in a tree that had them")
                if not ready:
                    raise SystemExit(f"{label}: no Ready accepted by the emulator; run invalid\n{booted.explain()}")
                figures[name].append(timing.breakdown(booted.record, booted.journal, requests).figures())
        elapsed, load_after = time.monotonic() - started, load()
    finally:
        workspace.close()

    print(f"first boot, {args.runs} boots each ({elapsed:.0f} s), {os.cpu_count()} CPUs, "
          f"load average before {load_before}, after {load_after}")
    for name, deb in debs.items():
        print(f"  {name}: {Path(deb).name} ({'--baseline ' + args.baseline if name == 'baseline' and args.baseline else deb})")
    names = list(debs)
    rows: List[str] = []
    for sample in figures[names[-1]] + [f for n in names for f in figures[n]]:
        rows.extend(key for key in sample if key not in rows)
    header = f"{'ms (from unit start unless said)':<44}" + "".join(f"{n + ' median':>20} {'min-max':>11}" for n in names)
    print(header)
    for key in rows:
        line = f"{key:<44}"
        for name in names:
            values = [f[key] for f in figures[name] if key in f]
            if values:
                line += f"{statistics.median(values):>20.1f} {f'{min(values):.0f}-{max(values):.0f}':>11}"
            else:
                line += f"{'-':>20} {'':>11}"
        print(line)
    for pair in (["baseline", "azprov"], ["baseline+keys", "azprov+keys"], ["azprov+keys", "azprov"]):
        if len(pair) != 2 or not all(n in figures for n in pair):
            continue
        for key in HEADLINE:
            values = [[f[key] for f in figures[n] if key in f] for n in pair]
            if all(values):
                a, b = (statistics.median(v) for v in values)
                print(f"{key}: {pair[1]} {b:.0f} ms vs {pair[0]} {a:.0f} ms ({b / a:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
