#!/usr/bin/env python3
"""Benchmark: how soon after a WireServer outage ends does `azprov report-ready` get Ready in?

The fabric emulator answers every WireServer request with 503 (no Retry-After) for the first T
seconds after it starts (scenario ``wireserver.unavailable_for``).  At t=0 -- right after the
emulator starts -- the real CLI is started as a process:
``[sys.executable, -m, azprov, --config FILE, report-ready, --wireserver URL, --timeout T+60]``.
FILE is empty for the shipped policy (so no /etc/azprov/azprov.toml is read), ``[http] jitter =
false`` for the jitter-off comparison, and ``[http] backoff_max = 2`` for a what-if with a lower cap.

Measured on the emulator's clock: "Ready after recovery" = arrival of the accepted Ready report
minus T, and the requests the agent spent during the outage (503s).  The aim: Ready under 2 s
after recovery.  Each (outage, policy) is run ``--runs`` times; runs go ``--parallel`` at a time,
each with its own emulator and its own process (the agents are asleep nearly all the time, so
they do not compete for the 2 CPUs except at start-up, which falls inside the outage).

``--fleet N`` also runs N processes at once against one emulator per (outage, policy) and prints
the spread of their Ready times and the requests in the first second after recovery.

No timing is asserted.  Invalid -- exit 1, after the figures -- if an agent exits non-zero, the
emulator did not accept its Ready, or a Ready arrived during the outage.  ``--timeout`` is a hard
limit on the whole benchmark.

Usage: /usr/bin/python3 benchmarks/recovery.py [--outage 10 [30 ...]] [--runs 10]
       [--policies shipped,nojitter[,max2]] [--parallel 5] [--fleet 0] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from azprov.fabric import FabricEmulator, Scenario  # noqa: E402

POLICIES = {
    "shipped": ("shipped: 0.5 s .. 3 s, full jitter", ""),
    "nojitter": ("jitter off: 0.5, 1, 2, 3, 3 .. s", "[http]\njitter = false\n"),
    "max2": ("what-if: cap 2 s, full jitter", "[http]\nbackoff_max = 2.0\n"),
}


def percentile(sorted_values: list, p: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def run_outage(outage: float, config_file: str, agents: int, limit: float) -> dict:
    """One emulator with a T-second outage, ``agents`` CLI processes started at t=0."""
    scenario = Scenario.from_dict({"wireserver": {"unavailable_for": outage}})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with FabricEmulator(scenario, wireserver=("127.0.0.1", 0), imds=None) as fabric:
        scratch = tempfile.mkdtemp(prefix="azprov-bench-")  # the KVP report goes there, not to this machine
        argv = [sys.executable, "-m", "azprov", "--config", config_file, "report-ready", "--root", scratch,
                "--wireserver", fabric.wireserver_url, "--timeout", f"{outage + 60:g}"]
        children = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE) for _ in range(agents)]
        problems = []
        for child in children:
            try:
                _, err = child.communicate(timeout=max(1.0, limit))
            except subprocess.TimeoutExpired:
                child.kill()
                _, err = child.communicate()
                problems.append(f"an agent was still running after {limit:.0f} s and was killed")
            if child.returncode != 0:
                problems.append(f"exit {child.returncode}: {err.decode(errors='replace').strip()[-300:]}")
        records = fabric.requests
        reports = [r for r in fabric.reports if r["state"] == "Ready" and r["valid"]]
    ready = sorted(r["t"] - outage for r in reports)
    if len(reports) != agents:
        problems.append(f"{len(reports)} Ready reports accepted, not {agents}")
    if ready and ready[0] < 0:
        problems.append("a Ready was accepted during the outage")
    during = sum(1 for r in records if r["fault"] == "unavailable")
    after = [r for r in records if r["t"] >= outage]
    return {
        "ready_after": ready,
        "during": during,
        "first_second": sum(1 for r in after if r["t"] < outage + 1.0),
        "first_request": min((r["t"] for r in records), default=float("nan")),
        "requests": len(records),
        "problems": problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, nargs="+", default=[10.0], help="seconds of 503 (default 10)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--policies", default="shipped,nojitter", help="comma-separated: " + ",".join(POLICIES))
    parser.add_argument("--parallel", type=int, default=5, help="single-agent runs at once")
    parser.add_argument("--fleet", type=int, default=0, help="also run this many agents at once (e.g. 50)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="hard limit on the whole benchmark, s")
    args = parser.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if any(p not in POLICIES for p in policies) or not policies or args.runs < 1 or args.parallel < 1 \
            or any(t <= 0 for t in args.outage) or args.fleet < 0:
        parser.error("bad arguments")
    faulthandler.dump_traceback_later(args.timeout, exit=True)  # the hard stop

    print(f"recovery: WireServer 503 for the first {', '.join(f'{t:g}' for t in args.outage)} s; "
          f"azprov report-ready as a process; {args.runs} runs per policy, {args.parallel} at a time; "
          f"Python {sys.version.split()[0]} ({sys.executable}), {os.cpu_count()} CPUs", flush=True)
    began = time.perf_counter()
    invalid = []
    rows = []
    fleet_rows = []
    with tempfile.TemporaryDirectory(prefix="azprov-recovery-") as scratch:
        configs = {}
        for name in policies:
            path = Path(scratch) / f"{name}.toml"
            path.write_text(POLICIES[name][1])
            configs[name] = str(path)
        for outage in args.outage:
            limit = outage + 90
            for name in policies:
                with ThreadPoolExecutor(args.parallel) as pool:
                    results = list(pool.map(lambda _: run_outage(outage, configs[name], 1, limit), range(args.runs)))
                for i, result in enumerate(results):
                    if result["problems"]:
                        invalid.append(f"T={outage:g} {name} run {i + 1}: {'; '.join(result['problems'])}")
                after = sorted(r["ready_after"][0] for r in results if r["ready_after"])
                during = [r["during"] for r in results]
                rows.append((outage, name, after, during, [r["first_request"] for r in results]))
                print(f"  T={outage:g} s {POLICIES[name][0]}: Ready after recovery (s) "
                      + " ".join(f"{a:.2f}" for a in after), flush=True)
            if args.fleet:
                for name in policies:
                    result = run_outage(outage, configs[name], args.fleet, limit)
                    if result["problems"]:
                        invalid.append(f"T={outage:g} {name} fleet of {args.fleet}: {'; '.join(result['problems'])}")
                    fleet_rows.append((outage, name, result))
                    print(f"  T={outage:g} s fleet of {args.fleet}, {POLICIES[name][0]}: done", flush=True)

    print()
    print(f"one agent, {args.runs} runs each: seconds from the end of the outage to the Ready's arrival "
          f"(aim: < 2 s), and requests spent during the outage")
    print(f"{'outage':>6}  {'policy':<36} {'median s':>8} {'max s':>6} {'< 2 s':>6} "
          f"{'503s median':>11} {'503s range':>10} {'1st request s':>13}")
    for outage, name, after, during, first in rows:
        under = sum(1 for a in after if a < 2.0)
        print(f"{outage:>5g}s  {POLICIES[name][0]:<36} {statistics.median(after) if after else float('nan'):>8.2f} "
              f"{max(after) if after else float('nan'):>6.2f} {under:>3}/{len(after):<2} "
              f"{statistics.median(during):>11.0f} {f'{min(during)}-{max(during)}':>10} "
              f"{statistics.median(first):>13.2f}")
    if fleet_rows:
        print()
        print(f"{args.fleet} agents at once: Ready after recovery, and requests")
        print(f"{'outage':>6}  {'policy':<36} {'p50 s':>6} {'p95 s':>6} {'max s':>6} {'< 2 s':>7} "
              f"{'503s':>6} {'503s/agent':>10} {'req in 1st s after':>18}")
        for outage, name, result in fleet_rows:
            after = result["ready_after"]
            print(f"{outage:>5g}s  {POLICIES[name][0]:<36} {percentile(after, 50):>6.2f} {percentile(after, 95):>6.2f} "
                  f"{max(after) if after else float('nan'):>6.2f} "
                  f"{sum(1 for a in after if a < 2.0):>3}/{len(after):<3} "
                  f"{result['during']:>6} {result['during'] / args.fleet:>10.1f} {result['first_second']:>18}")
    print("1st request s: when the agent's first request arrived (process start-up, import, config)")
    print(f"benchmark wall time: {time.perf_counter() - began:.0f} s")
    if invalid:
        for line in invalid:
            print(f"INVALID {line}", file=sys.stderr)
        print(f"recovery: {len(invalid)} invalid runs: the figures above do not count", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
