#!/usr/bin/env python3
"""Benchmark: a scale set's worth of agents reporting Ready at the same instant to a throttled
WireServer.

N agents (threads in this process, released together by a ``threading.Barrier``) each run the
code path of ``azprov report-ready``: their own ``HttpClient`` (own requests session, own
connections), a ``WireServerClient`` with the shipped WireServer policy (``azprov.clients.policy``
on the default configuration: backoff 0.5 s doubling to 3 s, full jitter), and
``.report(HealthStatus.ready_status())`` -- a goal state GET, then the health POST.  The fabric
emulator runs in a child process (its own interpreter and GIL, so the agents' CPU does not slow
the server down) with ``rate_limit``: a token bucket of R requests per second (burst R) that
answers 429 beyond it, with ``Retry-After`` or, in the "absent" variant, without it.

The shipped policy (since 69b6cc7) treats ``Retry-After`` as a floor: the wait after an answer
with ``Retry-After`` is Retry-After + the full-jitter draw (jitter on) or exactly Retry-After
(jitter off).  Four configurations -- jitter on (shipped) / off, x Retry-After present / absent --
plus what-ifs that change only the waits (through ``HttpClient``'s injectable sleep, see
``Sleeper``): the previous policy, max(Retry-After, draw), for comparison; "equal jitter"; and
(only with ``--configs``) Retry-After + up to 0.5 s.  Each is run ``--repeat`` times, interleaved;
every run gets a fresh emulator with a full bucket.  Printed per configuration (medians over the
repeats): time until every agent is Ready, per-agent p50/p95, requests, 429s, the emulator's peak
concurrency, the most requests arriving in one 100 ms window after the first second, the share of
waits that had a Retry-After floor and the share that were exactly the Retry-After value (nothing
on top: the agents come back together), agents that failed; then the ratios jitter-off/jitter-on,
shipped/previous and what-if/shipped, and (``--timeline``) a per-second timeline of one run of each.

No timing is asserted.  The run is invalid -- exit 1, after the figures -- if any agent failed,
did not finish, or the emulator did not accept exactly N Ready reports.  A hard overall timeout
(``--timeout``) ends the process whatever happens.

Usage: /usr/bin/python3 benchmarks/fleet.py [--agents 300] [--rate 100] [--retry-after 1]
       [--repeat 3] [--deadline 120] [--timeout 2400] [--timeline] [--backoff-max S]
       [--configs on/ra,off/ra,on/none,off/none,old/ra,eq/none (default); also small/ra]
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import logging
import multiprocessing
import os
import random
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CONFIGS = {  # name -> (jitter, Retry-After on the 429s, what-if change to the waits or None)
    "on/ra": (True, True, None),
    "off/ra": (False, True, None),
    "on/none": (True, False, None),
    "off/none": (False, False, None),
    "old/ra": (True, True, "max"),
    "eq/none": (True, False, "equal"),
    "small/ra": (True, True, "ra+small"),
}
LABEL = {
    "on/ra": "jitter on  (shipped), Retry-After",
    "off/ra": "jitter off,           Retry-After",
    "on/none": "jitter on  (shipped), no Retry-After",
    "off/none": "jitter off,           no Retry-After",
    "old/ra": "what-if: previous max(RA, jitter), RA",
    "eq/none": "what-if: equal jitter, no Retry-After",
    "small/ra": "what-if: RA + 0..0.5 s,  Retry-After",
}
BIN = 0.1  # seconds: window for "peak arrivals"


# --- the emulator, in a child process ----------------------------------------------------------

def emulator_process(conn, rate: float, burst: int, retry_after: str, keep_retry_after: bool,
                     backlog: int, limit: float) -> None:
    """Serve one run: send the URL, wait for "stop" (at most ``limit`` s), send the results."""
    from azprov.fabric import FabricEmulator, Scenario
    from azprov.fabric import listeners as fabric_listeners

    if backlog:
        # socketserver's listen backlog is 5; N simultaneous connects would overflow it and the
        # kernel would drop SYNs (1 s client retransmit), which is the emulator's limit, not the
        # fabric's.  Only this benchmark's emulator is changed.
        fabric_listeners.Server.request_queue_size = backlog

    class NoRetryAfterFabric(FabricEmulator):
        """The scenario's rate limit always sends Retry-After; this drops it from the 429s."""

        stripped = 0
        _strip_lock = threading.Lock()

        def _send(self, h, reply, step, record, commit):  # noqa: D401 - private hook of the emulator
            if record.get("fault") == "throttled":
                kept = [(name, value) for name, value in reply.headers if name.lower() != "retry-after"]
                with self._strip_lock:
                    NoRetryAfterFabric.stripped += len(reply.headers) - len(kept)
                reply.headers = kept
            return super()._send(h, reply, step, record, commit)

    if not keep_retry_after and not callable(getattr(FabricEmulator, "_send", None)):
        conn.send({"error": "FabricEmulator._send is gone: cannot remove Retry-After"})
        return
    cls = FabricEmulator if keep_retry_after else NoRetryAfterFabric
    scenario = Scenario.from_dict({"rate_limit": {"requests_per_second": rate, "burst": burst,
                                                  "retry_after": retry_after}})
    with cls(scenario, wireserver=("127.0.0.1", 0), imds=None) as fabric:
        started = time.monotonic()
        conn.send({"url": fabric.wireserver_url, "started": started})
        if conn.poll(limit):
            conn.recv()
        stats = fabric.stats()
        records = [(r["t"], r["endpoint"], r["status"], r["fault"]) for r in fabric.requests]
        reports = sum(1 for r in fabric.reports if r["state"] == "Ready" and r["valid"])
    conn.send({"stats": stats, "records": records, "reports": reports, "started": started,
               "stripped": NoRetryAfterFabric.stripped})


# --- one run -----------------------------------------------------------------------------------

def run_once(args, name: str) -> dict:
    from azprov.clients import policy
    from azprov.config import Config
    from azprov.health import HealthStatus
    from azprov.http import HttpClient
    from azprov.wireserver import WireServerClient

    jitter, keep_retry_after, what_if = CONFIGS[name]
    if not callable(getattr(HttpClient, "_attempt", None)):
        raise SystemExit("fleet: HttpClient._attempt is gone: cannot see the Retry-After of a wait")
    config = Config()
    http_config = dataclasses.replace(config.http, jitter=jitter)
    if args.backoff_max is not None:  # a what-if for the cap; the default is the shipped one
        http_config = dataclasses.replace(http_config, backoff_max=args.backoff_max)
    config = dataclasses.replace(config, http=http_config)
    agent_policy = policy(config, args.deadline)  # the shipped WireServer policy, shorter deadline

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    limit = args.deadline + 120
    server = ctx.Process(target=emulator_process, daemon=True,
                         args=(child, args.rate, args.burst, args.retry_after, keep_retry_after,
                               args.backlog, limit))
    server.start()
    if not parent.poll(30):
        server.kill()
        raise SystemExit("fleet: the emulator process did not start within 30 s")
    hello = parent.recv()
    if "error" in hello:
        raise SystemExit(f"fleet: {hello['error']}")
    url = hello["url"]

    n = args.agents
    done = [None] * n
    errors = [None] * n
    t0 = [0.0]

    def released() -> None:
        t0[0] = time.perf_counter()
        t0.append(time.monotonic())

    barrier = threading.Barrier(n, action=released)

    waits = [None] * n

    def agent(i: int) -> None:
        sleeper = Sleeper(what_if, agent_policy)
        waits[i] = sleeper.waits
        http = HttpClient(sleep=sleeper, rng=sleeper.rng)
        sleeper.watch(http)
        http.session  # noqa: B018 - build the session before the start line, as a process would have
        client = WireServerClient(url, http, agent_policy)
        try:
            barrier.wait(timeout=120)
            client.report(HealthStatus.ready_status())
            done[i] = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - counted and printed
            errors[i] = f"{type(exc).__name__}: {exc}"
        finally:
            http.session.close()

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    threads = [threading.Thread(target=agent, args=(i,), name=f"agent-{i}", daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    join_by = time.monotonic() + args.deadline + 60
    for thread in threads:
        thread.join(max(0.0, join_by - time.monotonic()))
    unfinished = sum(1 for thread in threads if thread.is_alive())
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    agents_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    parent.send("stop")
    if not parent.poll(60):
        server.kill()
        raise SystemExit("fleet: the emulator process did not answer within 60 s of stop")
    result = parent.recv()
    server.join(10)

    start = t0[0]
    ready = sorted(d - start for d in done if d is not None)
    failed = [e for e in errors if e is not None]
    offset = t0[1] - result["started"] if len(t0) > 1 else 0.0  # barrier time on the emulator's clock
    records = result["records"]
    bins = {}
    for t, _, _, _ in records:
        if t - offset >= 1.0:  # the first second is the start line, the same in every configuration
            bins[int((t - offset) // BIN)] = bins.get(int((t - offset) // BIN), 0) + 1
    all_waits = [w for agent_waits in waits if agent_waits for w in agent_waits]  # (wait, Retry-After)
    with_floor = sum(1 for _, ra in all_waits if ra is not None)
    at_retry_after = sum(1 for w, ra in all_waits if ra is not None and w == ra)
    stats = result["stats"]
    throttled = stats["throttled"]
    problems = []
    if failed:
        problems.append(f"{len(failed)} agents failed, e.g. {failed[0]}")
    if unfinished:
        problems.append(f"{unfinished} agents still running after {args.deadline + 60:.0f} s")
    if result["reports"] != n:
        problems.append(f"the emulator accepted {result['reports']} valid Ready reports, not {n}")
    if not keep_retry_after and result["stripped"] != throttled:
        problems.append(f"Retry-After removed from {result['stripped']} of {throttled} 429s")
    if keep_retry_after and result["stripped"]:
        problems.append("Retry-After removed in a configuration that keeps it")
    return {
        "all_ready": ready[-1] if len(ready) == n else float("nan"),
        "p50": percentile(ready, 50),
        "p95": percentile(ready, 95),
        "requests": stats["requests"],
        "throttled": throttled,
        "peak_concurrency": stats["peak_concurrency"],
        "peak_bin": max(bins.values()) if bins else 0,
        "failed": len(failed) + unfinished,
        "agents_cpu": agents_cpu,
        "waits": len(all_waits),
        "waits_ra_floor": 100.0 * with_floor / len(all_waits) if all_waits else 0.0,
        "waits_at_ra": 100.0 * at_retry_after / len(all_waits) if all_waits else 0.0,
        "problems": problems,
        "timeline": timeline(records, offset),
    }


class Sleeper:
    """``HttpClient``'s sleep (and jitter source) for one agent: records every wait and sleeps it.

    ``watch`` wraps the client so that the Sleeper knows, for each wait, the ``Retry-After`` of
    the answer it follows (parsed by azprov's own ``_retry_after``; None if there was none) and
    the failure count, which restarts with each ``request()`` call as the policy's own
    ``attempt`` does; ``rng`` records the policy's jitter draw.  The what-if configurations change
    a wait here, to measure another policy without touching azprov:
    - ``max``: the previous policy (before 69b6cc7): a wait that followed a Retry-After is
      max(Retry-After, the policy's full-jitter draw) instead of Retry-After + the draw;
    - ``ra+small``: Retry-After + a random fraction of ``backoff_initial`` (0.5 s) instead;
    - ``equal``: "equal jitter": ceiling/2 + a random fraction of ceiling/2 instead of a random
      fraction of the whole ceiling (a wait that followed a Retry-After is left alone).
    The last wait before the deadline (shortened by ``HttpClient``) is never changed.  ``waits``
    holds (the wait actually slept, the Retry-After it followed or None).
    """

    def __init__(self, what_if, policy) -> None:
        self.what_if = what_if
        self.policy = policy
        self.failures = 0
        self.draw = None  # the last jitter draw, in [0, 1)
        self.retry_after = None  # of the last answer
        self.waits = []

    def rng(self) -> float:
        self.draw = random.random()
        return self.draw

    def watch(self, http) -> None:
        """Restart the failure count with every ``request()`` of ``http``; note each attempt's
        Retry-After."""
        from azprov.http import _retry_after

        original_request = http.request
        original_attempt = http._attempt  # run_once checked that it is there

        def request(*args, **kwargs):
            self.failures = 0
            return original_request(*args, **kwargs)

        def attempt(*args, **kwargs):
            self.retry_after = None
            try:
                response = original_attempt(*args, **kwargs)
            except Exception as failure:  # noqa: BLE001 - a failed attempt may carry one too
                self.retry_after = getattr(failure, "retry_after", None)
                raise
            self.retry_after = _retry_after(response.headers.get("Retry-After"))
            return response

        http.request = request
        http._attempt = attempt

    def __call__(self, seconds: float) -> None:
        self.failures += 1
        ra = self.retry_after
        if self.policy.jitter and self.draw is not None:
            draw = self.policy.backoff(self.failures, lambda: self.draw)
        else:
            draw = self.policy.backoff(self.failures, lambda: 1.0)
        shipped = ra + (draw if self.policy.jitter else 0.0) if ra is not None else draw
        if seconds == shipped:  # not the wait shortened for a last attempt before the deadline
            if self.what_if == "max" and ra is not None:
                seconds = max(ra, draw)
            elif self.what_if == "ra+small" and ra is not None:
                seconds = ra + self.policy.backoff_initial * random.random()
            elif self.what_if == "equal" and ra is None:
                ceiling = self.policy.backoff(self.failures, lambda: 1.0)
                seconds = ceiling / 2 + ceiling / 2 * random.random()
        self.waits.append((seconds, ra))
        self.draw = None
        time.sleep(seconds)


def percentile(sorted_values: list, p: float) -> float:
    """Nearest-rank percentile of an ascending list; NaN if empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def timeline(records: list, offset: float) -> list:
    """[(second, requests arriving, of which 429)] from the barrier on."""
    seconds = {}
    for t, _, status, _ in records:
        second = max(0, int(t - offset))
        total, limited = seconds.get(second, (0, 0))
        seconds[second] = (total + 1, limited + (status == 429))
    return [(s, *seconds.get(s, (0, 0))) for s in range(max(seconds) + 1)] if seconds else []


# --- the report --------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second the emulator serves")
    parser.add_argument("--burst", type=int, default=None, help="token bucket size (default: the rate)")
    parser.add_argument("--retry-after", default="1", help="Retry-After on the 429s (where present)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=120.0, help="each agent's WireServer deadline, s")
    parser.add_argument("--backoff-max", type=float, default=None,
                        help="what-if: replace the shipped backoff cap (3 s) in every configuration")
    parser.add_argument("--backlog", type=int, default=1024, help="emulator listen backlog (0: its default, 5)")
    parser.add_argument("--timeout", type=float, default=2400.0, help="hard limit on the whole benchmark, s")
    parser.add_argument("--configs", default=",".join(c for c in CONFIGS if c != "small/ra"), help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--timeline", action="store_true", help="print each configuration's per-second timeline")
    args = parser.parse_args()
    args.burst = args.burst or max(1, int(-(-args.rate // 1)))
    names = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONFIGS]
    if unknown or not names or args.agents < 1 or args.repeat < 1 or args.rate <= 0:
        parser.error(f"bad arguments (unknown configs: {unknown})")
    if args.backoff_max is not None:
        for name in LABEL:
            LABEL[name] = LABEL[name].replace("(shipped)", f"(cap {args.backoff_max:g} s)")
    faulthandler.dump_traceback_later(args.timeout, exit=True)  # the hard stop
    logging.disable(logging.WARNING)  # azprov logs every attempt; the figures are what matters
    threading.stack_size(512 * 1024)

    print(f"fleet: {args.agents} agents at once, emulator {args.rate:g} requests/s (burst {args.burst}), "
          f"429 with Retry-After: {args.retry_after} or without; agent deadline {args.deadline:g} s; "
          f"{args.repeat} runs per configuration; "
          f"backoff cap {'%g s (what-if)' % args.backoff_max if args.backoff_max is not None else 'shipped'}; Python {sys.version.split()[0]} ({sys.executable}), "
          f"{os.cpu_count()} CPUs", flush=True)
    began = time.perf_counter()
    runs = {name: [] for name in names}
    for repeat in range(args.repeat):
        for name in names:
            result = run_once(args, name)
            runs[name].append(result)
            print(f"  run {repeat + 1} {LABEL[name]}: all Ready {result['all_ready']:.2f} s, "
                  f"{result['requests']} requests, {result['throttled']} x 429, "
                  f"peak concurrency {result['peak_concurrency']}, failed {result['failed']}, "
                  f"agents' CPU {result['agents_cpu']:.1f} s"
                  + (f"  INVALID: {'; '.join(result['problems'])}" if result["problems"] else ""),
                  flush=True)

    keys = ("all_ready", "p50", "p95", "requests", "throttled", "peak_concurrency", "peak_bin",
            "waits_ra_floor", "waits_at_ra", "failed")
    med = {name: {key: statistics.median(r[key] for r in runs[name]) for key in keys} for name in names}
    print()
    print(f"medians of {args.repeat} runs, {args.agents} agents, {args.rate:g} req/s "
          f"(the floor: {2 * args.agents} requests, {max(0, 2 * args.agents - args.burst) / args.rate:.1f} s)")
    header = (f"{'configuration':<38} {'all Ready s':>11} {'p50 s':>6} {'p95 s':>6} {'requests':>8} "
              f"{'429s':>6} {'peak conc':>9} {'peak/100ms':>10} {'RA floor':>8} {'=RA':>5} {'failed':>6}")
    print(header)
    for name in names:
        m = med[name]
        print(f"{LABEL[name]:<38} {m['all_ready']:>11.2f} {m['p50']:>6.2f} {m['p95']:>6.2f} "
              f"{m['requests']:>8.0f} {m['throttled']:>6.0f} {m['peak_concurrency']:>9.0f} "
              f"{m['peak_bin']:>10.0f} {m['waits_ra_floor']:>7.0f}% {m['waits_at_ra']:>4.0f}% "
              f"{m['failed']:>6.0f}")
    for ra in ("ra", "none"):
        on, off = f"on/{ra}", f"off/{ra}"
        if on in med and off in med:
            print(f"ratio jitter-off/jitter-on, {'Retry-After' if ra == 'ra' else 'no Retry-After'}: "
                  f"requests {med[off]['requests'] / med[on]['requests']:.2f}x, "
                  f"time to all Ready {med[off]['all_ready'] / med[on]['all_ready']:.2f}x, "
                  f"p95 {med[off]['p95'] / med[on]['p95']:.2f}x")
    if "on/ra" in med and "old/ra" in med:
        new, old = med["on/ra"], med["old/ra"]
        print(f"ratio shipped (RA + jitter)/previous (max(RA, jitter)), Retry-After: "
              f"requests {new['requests'] / old['requests']:.2f}x, "
              f"time to all Ready {new['all_ready'] / old['all_ready']:.2f}x, p95 {new['p95'] / old['p95']:.2f}x, "
              f"peak/100ms {new['peak_bin'] / old['peak_bin']:.2f}x")
    for shipped, what_if in (("on/ra", "small/ra"), ("on/none", "eq/none")):
        if shipped in med and what_if in med:
            print(f"ratio {LABEL[what_if].split(',')[0]}/shipped: requests "
                  f"{med[what_if]['requests'] / med[shipped]['requests']:.2f}x, "
                  f"time to all Ready {med[what_if]['all_ready'] / med[shipped]['all_ready']:.2f}x, "
                  f"p95 {med[what_if]['p95'] / med[shipped]['p95']:.2f}x")
    print("columns: peak conc = most requests in flight at the emulator; peak/100ms = most requests arriving "
          "in one 100 ms window after the first second; RA floor = share of the waits that followed an answer "
          "with a usable Retry-After (the wait was at least that); =RA = share of the waits that were exactly "
          "the Retry-After value (no jitter on top: the agents come back together)")
    if args.timeline:
        for name in names:
            line = runs[name][0]["timeline"]
            print(f"timeline, run 1, {LABEL[name].strip()}: second: requests(429s)")
            print("  " + "  ".join(f"{s}:{total}({limited})" for s, total, limited in line))
    print(f"benchmark wall time: {time.perf_counter() - began:.0f} s")

    invalid = [(name, i + 1, r["problems"]) for name in names for i, r in enumerate(runs[name]) if r["problems"]]
    if invalid:
        for name, i, problems in invalid:
            print(f"INVALID run {i} of {LABEL[name].strip()}: {'; '.join(problems)}", file=sys.stderr)
        print(f"fleet: {len(invalid)} invalid runs: the figures above do not count", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
