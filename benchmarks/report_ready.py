#!/usr/bin/env python3
"""Benchmark: `azprov report-ready` as a whole process against the seed article's script.

Starts the fabric emulator on loopback, then runs both programs alternately, RUNS times each,
with the same interpreter (sys.executable: run this with the venv's python, not a pyenv shim,
or the shim's start-up dominates both).  Prints wall-time medians, their ratio, and each
program's peak RSS (from wait4).  The aims: azprov within 2x the baseline's wall time (issue 13;
issue 2 asked for 3x) and at most 32 MiB peak RSS (issue 13).  As root it also runs ``azprov
provision --root`` on scratch image trees, the largest azprov process, for its peak RSS.
Usage: .venv/bin/python benchmarks/report_ready.py [RUNS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from azprov.fabric import FabricEmulator, Scenario  # noqa: E402


def timed(argv: list) -> tuple:
    """(wall seconds, peak RSS in MiB) of one child process; fails loudly on a non-zero exit."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({child.returncode}): {child.stderr.read().decode()[-500:]}")
    child.stderr.close()
    return wall, usage.ru_maxrss / 1024


def azprov_command() -> list:
    script = Path(sys.executable).with_name("azprov")
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "azprov"]


def compile_bytecode() -> None:
    """Write azprov's byte-code, as an installed package has it (the .deb and .rpm compile it at
    install time).  Without this, a PYTHONDONTWRITEBYTECODE environment would make every azprov
    run recompile every module from source, while the baseline's standard library is compiled."""
    import compileall

    if not compileall.compile_dir(str(HERE.parent / "azprov"), quiet=1, force=False):
        raise SystemExit("could not compile azprov's byte-code")


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    compile_bytecode()
    with FabricEmulator(Scenario.from_dict({}), wireserver=("127.0.0.1", 0), imds=("127.0.0.1", 0)) as fabric:
        host, port = fabric.wireserver_url.rsplit("/", 1)[1].split(":")
        baseline = [sys.executable, str(HERE / "seed_baseline.py"), host, port]
        # --root: the KVP report azprov writes first goes to a scratch tree, not this machine
        scratch = tempfile.mkdtemp(prefix="azprov-bench-")
        azprov = azprov_command() + ["report-ready", "--root", scratch, "--wireserver", fabric.wireserver_url]
        results = {"baseline": [], "azprov": []}
        for argv in (baseline, azprov):  # warm the page cache and byte-code first
            timed(argv)
        for _ in range(runs):
            results["baseline"].append(timed(baseline))
            results["azprov"].append(timed(azprov))
        accepted = sum(1 for report in fabric.reports if report.get("state") == "Ready")
        provision = provision_runs(fabric, min(runs, 5)) if os.geteuid() == 0 else []

    print(f"report-ready, {runs} runs each, interpreter {sys.executable} (Python {sys.version.split()[0]})")
    print(f"{'program':<10} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'peak RSS MiB':>13}")
    medians = {}
    for name, samples in results.items():
        walls = [wall * 1000 for wall, _ in samples]
        peak = max(rss for _, rss in samples)
        medians[name] = statistics.median(walls)
        print(f"{name:<10} {medians[name]:>10.1f} {min(walls):>8.1f} {max(walls):>8.1f} {peak:>13.1f}")
    ratio = medians["azprov"] / medians["baseline"]
    azprov_peak = max(rss for _, rss in results["azprov"])
    print(f"ratio azprov/baseline (median wall time): {ratio:.2f}x  (aim: <= 2x: {'met' if ratio <= 2 else 'NOT met'})")
    print(f"azprov peak RSS: {azprov_peak:.1f} MiB  (aim: <= 32 MiB: {'met' if azprov_peak <= 32 else 'NOT met'})")
    print(f"Ready reports accepted by the emulator: {accepted} of {2 * (runs + 1)} posted")
    if provision:
        walls = [wall * 1000 for wall, _ in provision]
        peak = max(rss for _, rss in provision)
        print(f"azprov provision --root (scratch image tree, {len(provision)} runs; wall time is mostly "
              f"ssh-keygen -A): median {statistics.median(walls):.0f} ms, peak RSS {peak:.1f} MiB "
              f"(aim: <= 32 MiB: {'met' if peak <= 32 else 'NOT met'})")
    else:
        print("azprov provision --root: not measured (needs root for useradd --root)")
    return 0


def provision_runs(fabric, runs: int) -> list:
    """(wall, peak RSS) of whole ``azprov provision --root`` runs, each on a fresh scratch image
    tree (tests/support/scratch_root.py) against the same emulator: the largest azprov process
    (every step imported, the IMDS thread)."""
    import tempfile

    from tests.support.scratch_root import make_scratch_root

    results = []
    with tempfile.TemporaryDirectory(prefix="azprov-bench-") as scratch:
        for run in range(runs):
            root = make_scratch_root(os.path.join(scratch, f"root{run}"))
            results.append(timed(azprov_command() + ["provision", "--root", root, "--wireserver",
                                                     fabric.wireserver_url, "--imds", fabric.imds_url]))
    return results


if __name__ == "__main__":
    sys.exit(main())
