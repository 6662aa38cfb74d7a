#!/usr/bin/env python3
"""Stress: N power cuts at random points of a real VM's first boot; each must converge.

Each trial boots the VM tests' image (tests/vm/: Debian with the cloud kernel and the real .deb,
QEMU on a qcow2 overlay with ``cache=writeback``, dnsmasq and the fabric emulator at the real
addresses in a private network namespace), SIGKILLs QEMU DELAY seconds after power-on (DELAY
uniform in [--from, --to]), boots it normally, then once more, and checks what
``tests/vm/harness.check_trial`` checks: Ready accepted and never NotReady, the SSH login with the
key, the host name, ``e2fsck -fn`` clean, passwd/shadow/group/gshadow and sudoers parse, azprov's
state names the VM, the unit disabled, nothing sent on the last boot.  Prints one line per trial
(the cut time, the requests that had reached the fabric by then, PASS or the failure) and a
summary; exits 1 if any trial failed.  Needs root and QEMU.

  sudo AZPROV_BOOT_CACHE=/work/boot-cache .venv/bin/python benchmarks/power_cuts.py \\
      --runs 20 [--parallel 2] [--from 8 --to 60] [--seed N] [--suite bookworm|trixie]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.boot import image as images  # noqa: E402
from tests.vm import harness  # noqa: E402
from tests.vm import image as vmimages  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2, help="VMs at once (default 2)")
    parser.add_argument("--from", dest="low", type=float, default=8.0, help="earliest cut, s after power-on")
    parser.add_argument("--to", dest="high", type=float, default=60.0, help="latest cut, s after power-on")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--keep", action="store_true", help="keep every VM's directory")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    delays = [round(rng.uniform(args.low, args.high), 1) for _ in range(args.runs)]
    print(f"power cuts: {args.runs} trials, cut uniform in [{args.low:g}, {args.high:g}] s, "
          f"{args.parallel} at once, seed {seed}", flush=True)

    workspace = images.Workspace(keep=args.keep)
    failures = []
    lock = threading.Lock()
    try:
        image, key, public = vmimages.image_and_key(workspace, args.suite)
        queue = list(enumerate(delays))
        started = time.monotonic()

        def worker() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    index, delay = queue.pop(0)
                data = harness.scenario(f"azprov-stress-{index}", "stressadmin", [public], incarnation=2)
                directory = workspace.path / "vms" / f"trial-{index}"
                reached = "?"
                try:
                    trial = harness.power_cut_trial(image, data, key, directory, "random", delay)
                    reached = ",".join(r.get("endpoint", "?") for r in trial.cut_records) or "-"
                    harness.check_trial(trial, data, directory)
                    verdict = "PASS"
                except BaseException as exc:  # a trial's failure is a finding, the run goes on
                    verdict = f"FAIL: {str(exc).splitlines()[0][:300]}"
                    with lock:
                        failures.append((index, delay, str(exc)))
                with lock:
                    print(f"trial {index:3d}: cut at {delay:5.1f} s; fabric had seen: {reached}; {verdict}", flush=True)

        threads = [threading.Thread(target=worker) for _ in range(max(1, args.parallel))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(f"\n{args.runs - len(failures)}/{args.runs} trials converged in {time.monotonic() - started:.0f} s "
              f"(seed {seed})")
        for index, delay, text in failures:
            print(f"--- trial {index} (cut at {delay} s) ---\n{text[:4000]}")
    finally:
        workspace.close()
        if args.keep:
            print(f"kept {workspace.path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
