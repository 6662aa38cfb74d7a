#!/usr/bin/env python3
"""Benchmark: `azprov report-ready` as a whole process against the seed article's script.

Starts the fabric emulator on loopback, then runs both programs alternately, RUNS times each,
with the same interpreter (sys.executable: run this with the venv's python, not a pyenv shim,
or the shim's start-up dominates both).  Prints wall-time medians, their ratio, and each
program's peak RSS (from wait4).  The aims: azprov within 2x the baseline's wall time (issue 13;
issue 2 asked for 3x) and at most 32 MiB peak RSS (issue 13).  As root it also runs ``azprov
provision --root`` on scratch image trees, the largest azprov process, for its peak RSS.

The requests floor (``requests_floor.py``: the same two requests with one ``requests.Session``
and ElementTree, issue 23) is what any program using ``requests`` pays: azprov's aim is at most
1.15x it.  Two reference rows bound what azprov can reach: the interpreter alone (``-c pass``) and the
interpreter importing ``requests`` and nothing else (azprov's HTTP library: its import is paid by
every command that talks to the fabric).  With ``--baseline REV`` the azprov of that git revision
(``git archive``) is run as well, alternately; both trees then run as ``python -m azprov`` with
the tree on PYTHONPATH (byte-compiled first), so that they start the same way.
Usage: .venv/bin/python benchmarks/report_ready.py [RUNS] [--baseline REV]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from azprov.fabric import FabricEmulator, Scenario  # noqa: E402


def timed(argv: list, tree: Optional[Path] = None) -> tuple:
    """(wall seconds, peak RSS in MiB, CPU seconds) of one child process; fails loudly on a
    non-zero exit.  CPU time (user + system) is less sensitive than wall time to the other
    processes on the machine, though not immune (caches, frequency)."""
    started = time.perf_counter()
    # with a tree: ``python -m azprov`` finds that tree's azprov first (PYTHONPATH, and the
    # working directory that -m puts first on sys.path), not the venv's editable install
    env, cwd = (dict(os.environ, PYTHONPATH=str(tree)), str(tree)) if tree else (None, None)
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({child.returncode}): {child.stderr.read().decode()[-500:]}")
    child.stderr.close()
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def azprov_command() -> list:
    script = Path(sys.executable).with_name("azprov")
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "azprov"]


def compile_bytecode(tree: Path = HERE.parent) -> None:
    """Write azprov's byte-code, as an installed package has it (the .deb and .rpm compile it at
    install time).  Without this, a PYTHONDONTWRITEBYTECODE environment would make every azprov
    run recompile every module from source, while the baseline's standard library is compiled."""
    import compileall

    if not compileall.compile_dir(str(tree / "azprov"), quiet=1, force=False):
        raise SystemExit("could not compile azprov's byte-code")


def export_revision(revision: str, into: str) -> Path:
    """The files of ``revision`` (``git archive``) in a new directory under ``into``."""
    tree = Path(tempfile.mkdtemp(prefix="baseline-", dir=into))
    archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", "--format=tar", revision],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="?", type=int, default=20, help="runs per program (default 20)")
    parser.add_argument("--baseline", metavar="REV", help="also run the azprov of this git revision")
    args = parser.parse_args()
    runs = args.runs
    compile_bytecode()
    scratch = tempfile.mkdtemp(prefix="azprov-bench-")
    with FabricEmulator(Scenario.from_dict({}), wireserver=("127.0.0.1", 0), imds=("127.0.0.1", 0)) as fabric:
        host, port = fabric.wireserver_url.rsplit("/", 1)[1].split(":")
        # --root: the KVP report azprov writes first goes to a scratch tree, not this machine
        command = ["report-ready", "--root", scratch, "--wireserver", fabric.wireserver_url]
        programs: Dict[str, tuple] = {
            "seed": ([sys.executable, str(HERE / "seed_baseline.py"), host, port], None),
            "python only": ([sys.executable, "-c", "pass"], None),
            "requests only": ([sys.executable, "-c", "import requests"], None),
            "requests floor": ([sys.executable, str(HERE / "requests_floor.py"), host, port], None),
        }
        if args.baseline:
            baseline = export_revision(args.baseline, scratch)
            compile_bytecode(baseline)
            programs["baseline"] = ([sys.executable, "-m", "azprov", *command], baseline)
            programs["azprov"] = ([sys.executable, "-m", "azprov", *command], HERE.parent)
        else:  # the venv's azprov script, else this tree (e.g. Debian's python3 with python3-requests)
            script = Path(sys.executable).with_name("azprov").exists()
            programs["azprov"] = (azprov_command() + command, None if script else HERE.parent)
        results: Dict[str, List[tuple]] = {name: [] for name in programs}
        for argv, tree in programs.values():  # warm the page cache and byte-code first
            timed(argv, tree)
        order = list(programs)
        for _ in range(runs):
            random.shuffle(order)  # alternately, in a new order each round: all see the same load
            for name in order:
                results[name].append(timed(*programs[name]))
        accepted = sum(1 for report in fabric.reports if report.get("state") == "Ready")
        posted = (runs + 1) * sum(1 for name in programs if name in ("seed", "requests floor", "baseline", "azprov"))
        provision = provision_runs(fabric, min(runs, 5)) if os.geteuid() == 0 else []

    print(f"report-ready, {runs} runs each, interpreter {sys.executable} (Python {sys.version.split()[0]}), "
          f"load average {' '.join(open('/proc/loadavg').read().split()[:3])} after the runs")
    if args.baseline:
        print(f"baseline: azprov at {args.baseline}; azprov: this working tree (both as python -m azprov)")
    print(f"{'program':<15} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'/ seed':>7} {'CPU ms':>7} "
          f"{'/ seed':>7} {'peak RSS MiB':>13}")
    medians = {name: statistics.median(wall * 1000 for wall, _, _ in samples) for name, samples in results.items()}
    cpu = {name: statistics.median(used * 1000 for _, _, used in samples) for name, samples in results.items()}
    for name, samples in results.items():
        walls = [wall * 1000 for wall, _, _ in samples]
        peak = max(rss for _, rss, _ in samples)
        print(f"{name:<15} {medians[name]:>10.1f} {min(walls):>8.1f} {max(walls):>8.1f} "
              f"{medians[name] / medians['seed']:>6.2f}x {cpu[name]:>7.1f} {cpu[name] / cpu['seed']:>6.2f}x {peak:>13.1f}")
    ratio = medians["azprov"] / medians["seed"]
    azprov_peak = max(rss for _, rss, _ in results["azprov"])
    print(f"ratio azprov/seed (median wall time): {ratio:.2f}x  (aim: <= 2x: {'met' if ratio <= 2 else 'NOT met'}); "
          f"CPU time {cpu['azprov'] / cpu['seed']:.2f}x")
    floor_wall, floor_cpu = medians["azprov"] / medians["requests floor"], cpu["azprov"] / cpu["requests floor"]
    print(f"ratio azprov/requests floor: {floor_wall:.2f}x wall, {floor_cpu:.2f}x CPU  (aim: <= 1.15x: "
          f"{'met' if max(floor_wall, floor_cpu) <= 1.15 else 'NOT met'})")
    if "baseline" in medians:
        print(f"ratio azprov/baseline: {medians['azprov'] / medians['baseline']:.2f}x wall, "
              f"{cpu['azprov'] / cpu['baseline']:.2f}x CPU")
    print(f"importing requests alone: {medians['requests only'] / medians['seed']:.2f}x the seed script's whole run")
    print(f"azprov peak RSS: {azprov_peak:.1f} MiB  (aim: <= 32 MiB: {'met' if azprov_peak <= 32 else 'NOT met'})")
    print(f"Ready reports accepted by the emulator: {accepted} of {posted} posted")
    if provision:
        walls = [wall * 1000 for wall, _, _ in provision]
        peak = max(rss for _, rss, _ in provision)
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
