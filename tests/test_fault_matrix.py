"""The fault matrix: scripted fabric faults and hostile hosts against the real ``azprov provision``.

Every row of :data:`MATRIX` is one scenario: what the fabric emulator plays (a scenario dict),
how the image tree is prepared (a full disk, a read-only ``/etc``, an existing user), how the CLI
is run (once, killed and restarted, two at once, with a dead proxy in the environment), and what
must come out of it: the exit code, the health reports the emulator accepted (with ``reason=`` and
``step=`` for a failure), the time it took, the tree (no temp file left, the state file only
after Ready, the unit link present iff not provisioned) and the log (no traceback, no key
material, no request or response body).

One parametrized test checks the rows.  The runs themselves are started by a module fixture, a
few at a time (``AZPROV_FAULT_MATRIX_JOBS``, default 3), longest first, so the 30-second and
deadline scenarios wait side by side; each test then waits for its own row.  Only the selected
rows run (``-k`` works as usual).

``docs/fault-matrix.md`` is generated from this table and a recorded run::

    AZPROV_FAULT_MATRIX_RECORD=/tmp/matrix.json /usr/bin/python3 -m pytest tests/test_fault_matrix.py
    /usr/bin/python3 tests/test_fault_matrix.py /tmp/matrix.json > docs/fault-matrix.md

and ``test_the_doc_lists_every_row`` keeps the two in step.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

_TESTS = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.dirname(_TESTS), _TESTS):  # run as a script (rendering the doc) too
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pytest  # noqa: E402

from support import cli  # noqa: E402
from support.fakes import ED25519  # noqa: E402
from support.scratch_root import (  # noqa: E402
    WANTS_LINK, comparable, diff, make_scratch_root, read_state, snapshot,
)

pytestmark = pytest.mark.emulator

REPO = os.path.dirname(_TESTS)
DOC = os.path.join(REPO, "docs", "fault-matrix.md")
VM_ID = "8b1e4c3d-52a7-4f6e-9c80-d3a2b7e615f4"  # the emulator's default compute.vmId
LOCK_ONLY = {"run/azprov", "run/azprov/lock"}  # what any run may leave: the run lock
FAST_HTTP = {"backoff_initial": 0.05, "backoff_max": 0.5}  # rows not about the shipped backoff
DEFAULT_TIMEOUT = 20.0
MiB = 1024 * 1024

# Bodies azprov must never log: markers that only occur in goal states, IMDS documents, health
# reports and the emulator's error bodies.
BODY_MARKERS = ("<GoalState xmlns", "<Incarnation>", "<ExpectedState>", "<ContainerId>",
                "<RoleInstanceList>", "HostingEnvironmentConfig",
                '"osProfile"', '"azEnvironment"', '"publicKeys"', '"vmSize"',
                "<Health", "<GoalStateIncarnation>", "<SubStatus>", "scripted fault: HTTP",
                "RAW-BODY-MARKER")


# --- keys ---------------------------------------------------------------------------------------

def fleet_key(index: int) -> str:
    """A structurally valid, distinct ed25519 public key line (not a real key pair)."""
    blob = (struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32)
            + hashlib.sha256(b"fault-matrix-key-%d" % index).digest())
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} user{index}@fleet"


ED25519_B64 = ED25519.split()[1]
OTHER_KEY = fleet_key(-1)  # what the full-disk row finds already installed
KEYS_1000 = [fleet_key(i) for i in range(1000)]
KEYS_1001 = [fleet_key(i) for i in range(1001)]


def key_material(scenario: dict) -> List[str]:
    """The base64 of every key the scenario serves (the default document serves ED25519)."""
    keys = scenario.get("public_keys")
    if keys is None:
        return [ED25519_B64]
    texts = [k if isinstance(k, str) else k.get("keyData", "") for k in keys]
    return sorted({word for text in texts for word in text.split() if len(word) >= 40})


# --- what a row is ------------------------------------------------------------------------------

@dataclasses.dataclass
class Context:
    """What a row's hooks get: its scratch root and a private temp directory."""

    root: str
    tmp: str
    facts: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Run:
    """What one row's play produced, collected before any mount of the row is taken down."""

    exit: Optional[int]  # the exit code of the run the row is about
    exits: List[Optional[int]]  # every azprov process of the play, in order
    logs: str  # stderr of every process (-v)
    stdout: str
    elapsed: float  # seconds of the run the row is about, from its first log line to its exit
    wall: float  # the same from the process start (interpreter start-up included)
    phases: Dict[str, float]  # seconds per step of that run (see phase_times)
    requests: List[dict]
    reports: List[dict]
    before: Dict[str, Tuple]
    after: Dict[str, Tuple]
    temp: List[str]
    state: Optional[dict]
    unit_enabled: bool
    facts: Dict[str, Any]


Play = Callable[["Row", Context, Any, List[str], Dict[str, str]], Dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    does: str  # what the emulator (or the host) does, for the doc
    scenario: Any = dataclasses.field(default_factory=dict)  # dict, or a callable returning one
    args: Tuple[str, ...] = ()  # extra CLI arguments
    timeout: float = DEFAULT_TIMEOUT  # --timeout (caps both phase deadlines)
    http: Optional[Dict[str, float]] = None  # [http] settings in a --config file; None: shipped
    env: Tuple[Tuple[str, str], ...] = ()
    image: Tuple[Tuple[str, Any], ...] = ()  # make_scratch_root keyword arguments
    setup: Optional[Callable[[Context], Any]] = None  # context manager factory yielding extra args
    play: Optional[Play] = None  # None: one run
    exit: int = 0
    reports: Tuple[str, ...] = ("Ready",)  # "Ready" or "Failed" (NotReady/ProvisioningFailed)
    reason: Optional[str] = None  # of the Failed report
    step: Optional[str] = None  # of the Failed report, or of the log line when nothing is reported
    message: Optional[str] = None  # a phrase the failure Description must contain
    incarnation: Optional[int] = None  # of the (last) Ready report; default: the scenario's
    max_seconds: float = 15.0
    min_seconds: float = 0.0
    tree: str = "unchanged"  # "unchanged" (only the run lock), "reference" (a clean run's), "any"
    violations: Tuple[str, ...] = ()  # request faults the emulator may record (an unknown api-version)
    inspect: Optional[Callable[[Context], None]] = None  # collects facts while mounts are up
    check: Optional[Callable[[Run], None]] = None  # row-specific assertions
    deadline: Optional[str] = None  # the step whose phase must last --timeout (-0.5/+1 s), then fail
    timed: Optional[str] = None  # a step whose duration the doc shows
    note: str = ""  # expected outcome beyond the columns, for the doc
    xfail: Optional[str] = None  # "bug: ..." while the code is wrong (a strict xfail)
    found: str = ""  # a bug this row found that has since been fixed, for the doc

    def scenario_dict(self) -> dict:
        return self.scenario() if callable(self.scenario) else dict(self.scenario)

    @property
    def expected_incarnation(self) -> int:
        if self.incarnation is not None:
            return self.incarnation
        scenario = self.scenario if isinstance(self.scenario, dict) else {}
        return int(scenario.get("incarnation", 1))

    def expected_text(self) -> str:
        parts = [f"exit {self.exit}"]
        if not self.reports:
            parts.append("no report")
        for kind in self.reports:
            if kind == "Ready":
                parts.append(f"Ready (incarnation {self.expected_incarnation})")
            else:
                parts.append(f"ProvisioningFailed reason={self.reason} step={self.step}")
        if not self.reports and self.step:
            parts.append(f"fails in step {self.step}")
        if self.tree == "unchanged":
            parts.append("tree unchanged")
        if self.deadline:
            parts.append(f"phase {self.deadline} gives up at its {self.timeout:g} s deadline (+1 s)")
        parts.append(f"≤ {self.max_seconds:g} s")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


def row(id: str, does: str, **fields: Any) -> Row:
    for name in ("image", "env"):
        if isinstance(fields.get(name), dict):
            fields[name] = tuple(fields[name].items())
    if "args" in fields:
        fields["args"] = tuple(fields["args"])
    return Row(id, does, **fields)


# --- plays: how azprov is run -------------------------------------------------------------------

def azprov_args(row: Row, ctx: Context, fabric, extra: Sequence[str]) -> List[str]:
    args = ["provision", "-v", "--root", ctx.root, "--wireserver", fabric.wireserver_url,
            "--imds", fabric.imds_url, "--timeout", f"{row.timeout:g}"]
    if row.http is not None:
        path = os.path.join(ctx.tmp, "azprov.toml")
        with open(path, "w") as handle:
            handle.write("[http]\n" + "".join(f"{k} = {float(v)!r}\n" for k, v in row.http.items()))
        args += ["--config", path]
    return args + list(row.args) + list(extra)  # later options win: extra can redirect an endpoint


def run_azprov(args: Sequence[str], env_extra: Dict[str, str], limit: float) -> Dict[str, Any]:
    """One ``azprov`` process in its own process group, killed if it outlives ``limit``.

    ``elapsed`` is from its first log line to its exit: the phase deadlines start after the
    interpreter has started, which on a loaded machine can take a second by itself (``wall``
    includes it)."""
    env = cli.environment()
    for name in list(env):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del env[name]
    env.update(env_extra)
    started = time.monotonic()
    process = subprocess.Popen(cli.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    err: List[str] = []
    out: List[str] = []
    times: List[Tuple[float, str]] = []

    def read_err() -> None:
        for line in process.stderr:  # azprov's log handler flushes every record
            times.append((time.monotonic(), line))
            err.append(line)

    readers = [threading.Thread(target=read_err),
               threading.Thread(target=lambda: out.append(process.stdout.read()))]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        err.append(f"[fault matrix: killed after {limit:g} s]\n")
    ended = time.monotonic()
    for reader in readers:
        reader.join(timeout=10)
    process.stdout.close()
    process.stderr.close()
    return dict(exit=process.returncode, stdout="".join(out), logs="".join(err),
                elapsed=ended - (times[0][0] if times else started), wall=ended - started,
                phases=phase_times(times))


def phase_times(times: List[Tuple[float, str]]) -> Dict[str, float]:
    """Seconds from ``step X: started`` to ``step X: done`` or ``provisioning failed in step X``."""
    started: Dict[str, float] = {}
    phases: Dict[str, float] = {}
    for when, line in times:
        match = re.search(r"step (\w+): started$|step (\w+): done|provisioning failed in step (\w+):", line)
        if match is None:
            continue
        if match.group(1):
            started[match.group(1)] = when
        else:
            name = match.group(2) or match.group(3)
            if name in started:
                phases[name] = round(when - started[name], 3)
    return phases


def play_once(row: Row, ctx: Context, fabric, extra: List[str], env: Dict[str, str]) -> Dict[str, Any]:
    result = run_azprov(azprov_args(row, ctx, fabric, extra), env, row.max_seconds + 60)
    return dict(result, exits=[result["exit"]])


def kill_after(marker: str) -> Play:
    """SIGKILL the whole process group when the log shows ``marker``, then run again."""

    def play(row: Row, ctx: Context, fabric, extra: List[str], env: Dict[str, str]) -> Dict[str, Any]:
        killed_log = cli.provision_until(ctx.root, fabric, marker, timeout=60)
        ctx.facts["killed_reports"] = len(fabric.reports)
        ctx.facts["killed_requests"] = len(fabric.requests)
        result = run_azprov(azprov_args(row, ctx, fabric, extra), env, row.max_seconds + 60)
        return dict(result, exits=[-signal.SIGKILL, result["exit"]], logs=killed_log + result["logs"])

    return play


def play_two_at_once(row: Row, ctx: Context, fabric, extra: List[str], env: Dict[str, str]) -> Dict[str, Any]:
    args = azprov_args(row, ctx, fabric, extra)
    results: List[Any] = [None, None]

    def one(index: int) -> None:
        results[index] = run_azprov(args, env, row.max_seconds + 60)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    provisioned = [r for r in results if "provisioned: Ready accepted" in r["stdout"]]
    main = provisioned[0] if provisioned else results[0]
    ctx.facts["outputs"] = [(r["exit"], r["stdout"]) for r in results]
    return dict(exit=main["exit"], exits=[r["exit"] for r in results],
                logs=results[0]["logs"] + results[1]["logs"], stdout=results[0]["stdout"] + results[1]["stdout"],
                elapsed=max(r["elapsed"] for r in results), wall=max(r["wall"] for r in results),
                phases=main["phases"])


# --- setups: what is done to the host ------------------------------------------------------------

def black_holed(endpoint: str) -> Callable[[Context], Any]:
    """A loopback address where SYNs are dropped: a listening socket with backlog 0 whose accept
    queue is filled and never accepted, so every new connection attempt times out."""

    @contextlib.contextmanager
    def setup(ctx: Context) -> Iterator[List[str]]:
        server = socket.socket()
        fillers: List[socket.socket] = []
        try:
            server.bind(("127.0.0.1", 0))
            server.listen(0)
            port = server.getsockname()[1]
            for _ in range(8):  # Linux queues backlog + 1 connections; then SYNs are dropped
                client = socket.socket()
                client.settimeout(0.3)
                try:
                    client.connect(("127.0.0.1", port))
                except (socket.timeout, OSError):
                    client.close()
                    break
                fillers.append(client)
            else:
                raise AssertionError("the accept queue never filled")
            try:  # one more attempt must time out, not be refused or accepted
                socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
            except socket.timeout:
                pass
            else:
                raise AssertionError("the black hole accepted a connection")
            ctx.facts["black_hole"] = f"127.0.0.1:{port}"
            yield [f"--{endpoint}", f"127.0.0.1:{port}"]
        finally:
            for client in fillers:
                client.close()
            server.close()

    return setup


def _mount(*argv: str) -> None:
    done = subprocess.run(["mount", *argv], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:  # e.g. a container without CAP_SYS_ADMIN
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


def _umount(path: str) -> None:
    if subprocess.run(["umount", path], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


@contextlib.contextmanager
def full_home(ctx: Context) -> Iterator[List[str]]:
    """``azureuser`` exists (uid 1000) with a 64 KiB tmpfs as its home, holding a 0600
    authorized_keys with another key, filled to the last byte."""
    home = os.path.join(ctx.root, "home/azureuser")
    _mount("-t", "tmpfs", "-o", "size=64k,nr_inodes=64,mode=0700,uid=1000,gid=1000", "tmpfs", home)
    try:
        ssh = os.path.join(home, ".ssh")
        os.mkdir(ssh, 0o700)
        os.chown(ssh, 1000, 1000)
        keys = os.path.join(ssh, "authorized_keys")
        with open(keys, "w") as handle:
            handle.write(OTHER_KEY + "\n")
        os.chown(keys, 1000, 1000)
        os.chmod(keys, 0o600)
        fd = os.open(os.path.join(home, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)
        free = os.statvfs(home)
        assert free.f_bavail == 0, "the tmpfs is not full"
        ctx.facts["home"] = home
        yield []
    finally:
        _umount(home)


def inspect_full_home(ctx: Context) -> None:
    ssh = os.path.join(ctx.facts["home"], ".ssh")
    ctx.facts["ssh_listing"] = sorted(os.listdir(ssh))
    with open(os.path.join(ssh, "authorized_keys")) as handle:
        ctx.facts["authorized_keys"] = handle.read()


@contextlib.contextmanager
def read_only_etc(ctx: Context) -> Iterator[List[str]]:
    etc = os.path.join(ctx.root, "etc")
    _mount("--bind", etc, etc)
    try:
        _mount("-o", "remount,bind,ro", etc)
        assert _write_fails(etc), "the bind mount is not read-only"
        yield []
    finally:
        _umount(etc)


def _write_fails(directory: str) -> bool:
    try:
        os.close(os.open(os.path.join(directory, ".probe"), os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError:
        return True
    os.unlink(os.path.join(directory, ".probe"))
    return False


@contextlib.contextmanager
def nothing(ctx: Context) -> Iterator[List[str]]:
    yield []


# --- row-specific checks -------------------------------------------------------------------------

def requests_to(run: Run, endpoint: str) -> List[dict]:
    return [r for r in run.requests if r["endpoint"] == endpoint]


def attempts_failed(run: Run, what: str) -> int:
    return len(re.findall(rf"^azprov: \w+: {re.escape(what)}: attempt \d+ failed", run.logs, re.M))


def check_refused_30s(run: Run) -> None:
    answered = [r for r in requests_to(run, "goalstate") if r["status"] == 200]
    # Served from 30 s on; the client notices within one backoff ceiling (3 s) and a connect.
    assert answered and 30.0 <= answered[0]["t"] <= 34.0, answered[:1]
    assert "connection refused" in run.logs
    assert 8 <= attempts_failed(run, "goal state") <= 200  # backoff capped at 3 s, jittered


def check_black_hole(run: Run) -> None:
    assert "connect timeout" in run.logs
    assert attempts_failed(run, "goal state") >= 1


def check_imds_black_hole(run: Run) -> None:
    assert "connect timeout" in run.logs and requests_to(run, "imds") == []


def check_429(run: Run) -> None:
    (first, second) = [r["t"] for r in requests_to(run, "goalstate")[:2]]
    assert [r["status"] for r in requests_to(run, "goalstate")[:2]] == [429, 200]
    assert second - first >= 1.95, "Retry-After: 2 was not honoured"
    assert second - first < 4.0
    assert "(Retry-After " in run.logs


def check_retry_after_beyond_deadline(run: Run) -> None:
    statuses = [r["status"] for r in requests_to(run, "goalstate")]
    assert statuses == [429, 429], statuses  # the first, then one last attempt before the deadline


def check_410(run: Run) -> None:
    assert [r["status"] for r in requests_to(run, "health")] == [410, 200]


def check_410_forever(run: Run) -> None:
    assert [r["status"] for r in requests_to(run, "health")] == [410] * 10


def check_moved(run: Run) -> None:
    incarnations = [r["report"]["incarnation"] for r in requests_to(run, "health")]
    assert incarnations == [7]


def check_retried(endpoint: str, failures: int) -> Callable[[Run], None]:
    """The first ``failures`` requests to ``endpoint`` played a fault, the next one was served."""

    def check(run: Run) -> None:
        seen = [(r["fault"], r["status"]) for r in requests_to(run, endpoint)]
        assert len(seen) > failures, seen
        assert all(fault for fault, _ in seen[:failures]), seen
        assert seen[failures] == (None, 200), seen

    return check


def logged(phrase: str, times: int = 1) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert run.logs.count(phrase) >= times, f"{phrase!r} fewer than {times} times in the log"

    return check


def all_of(*checks: Callable[[Run], None]) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        for one in checks:
            one(run)

    return check


def check_one_request(endpoint: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert len(requests_to(run, endpoint)) == 1, "an oversized answer must not be fetched again"
        assert "over the" in run.logs

    return check


def check_too_slow(times: int) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert run.logs.count("response too slow") >= times, run.logs

    return check


def check_fallback(run: Run) -> None:
    paths = [(r["path"], r["status"]) for r in requests_to(run, "imds")]
    assert paths == [("/metadata/instance?api-version=2021-08-01&extended=true", 400),
                     ("/metadata/instance?api-version=2019-06-01", 200)], paths


def check_1000_keys(run: Run) -> None:
    with open(os.path.join(run.facts["root"], "home/azureuser/.ssh/authorized_keys")) as handle:
        lines = handle.read().splitlines()
    assert lines == KEYS_1000


def check_read_timeout(run: Run) -> None:
    assert "read timeout" in run.logs


def check_full_disk(run: Run) -> None:
    assert run.facts["authorized_keys"] == OTHER_KEY + "\n", "authorized_keys was changed or truncated"
    assert run.facts["ssh_listing"] == ["authorized_keys"], run.facts["ssh_listing"]
    assert "Traceback" not in run.logs


def check_dead_proxy(run: Run) -> None:
    assert all(not r["violations"] for r in run.requests)
    assert attempts_failed(run, "goal state") == 0 and attempts_failed(run, "IMDS instance metadata") == 0


def check_health_400(run: Run) -> None:
    assert [r["status"] for r in requests_to(run, "health")] == [400]  # not retried


def check_killed(run: Run) -> None:
    assert run.facts["killed_reports"] == 0  # the kill landed before Ready


def check_killed_after_ready(run: Run) -> None:
    assert run.facts["killed_reports"] == 1  # Ready was accepted before the kill


def check_silent_after_state(run: Run) -> None:
    check_killed_after_ready(run)
    after = [r["listener"] for r in run.requests[run.facts["killed_requests"]:]]
    assert after == ["imds"], after  # no DMI in the tree: IMDS says which VM this is; nothing else
    assert "already provisioned" in run.stdout


def check_retry_after_date(run: Run) -> None:
    (first, second) = requests_to(run, "goalstate")[:2]
    assert (first["status"], second["status"]) == (503, 200)
    assert second["t"] - first["t"] >= 1.5, "the Retry-After date was not honoured"
    assert "(Retry-After " in run.logs


def check_keys_in_home(run: Run) -> None:
    root = run.facts["root"]
    with open(os.path.join(root, "home/azureuser/.ssh/authorized_keys")) as handle:
        assert handle.read() == ED25519 + "\n"
    assert not os.path.lexists(os.path.join(root, "root/.ssh"))
    assert not os.path.lexists(os.path.join(root, "etc/ssh/authorized_keys"))
    assert "is outside azureuser's home" in run.logs


def check_report_lost(run: Run) -> None:
    assert requests_to(run, "health") == []
    assert os.path.exists(os.path.join(run.facts["root"], "home/azureuser/.ssh/authorized_keys"))


def check_garbage_retry_after(run: Run) -> None:
    (first, second) = requests_to(run, "goalstate")[:2]
    assert second["t"] - first["t"] < 1.5, "an unusable Retry-After must fall back to the backoff"


def check_log_tells_why(run: Run) -> None:
    check_health_400(run)
    assert "HTTP 400" in run.logs
    assert "did not answer" not in run.logs, "the log says the WireServer did not answer; it answered 400"
    assert "refused or garbled the report" in run.logs


def check_two(run: Run) -> None:
    exits = sorted(run.exits)
    assert exits in ([0, 0], [0, 8]), exits
    outputs = [out for _, out in run.facts["outputs"]]
    assert sum("provisioned: Ready accepted" in out for out in outputs) == 1
    if exits == [0, 0]:
        assert sum("already provisioned" in out for out in outputs) == 1


# --- the matrix ----------------------------------------------------------------------------------

def _retry_after_date() -> dict:
    import email.utils

    when = email.utils.formatdate(time.time() + 5, usegmt=True)  # built just before the run
    return {"goalstate": [{"status": 503, "retry_after": when}]}


BILLION_LAUGHS = os.path.join(_TESTS, "data", "scenarios", "billion-laughs.xml")
KILL_SCENARIO = {"goalstate": [{}, {"delay": 3}]}  # Ready's goal state comes late: kills land first

MATRIX: List[Row] = [
    # --- the WireServer unreachable or failing -----------------------------------------------
    row("wireserver-refused-30s", "WireServer refuses connections (bound, not listening) for 30 s, then serves",
        scenario={"wireserver": {"refuse_for": 30}}, timeout=60, http=None,
        min_seconds=28, max_seconds=45, tree="reference", check=check_refused_30s,
        note="shipped backoff (≤ 3 s between attempts)"),
    row("wireserver-black-hole", "WireServer address drops SYNs (full accept queue): every connect times out",
        setup=black_holed("wireserver"), timeout=5, exit=4, reports=(), step="goal_state",
        deadline="goal_state", min_seconds=4.5, max_seconds=7, check=check_black_hole,
        note="nobody to report to"),
    row("imds-black-hole", "IMDS address drops SYNs; the WireServer answers",
        setup=black_holed("imds"), timeout=5, exit=4, reports=("Failed",),
        reason="fabric_unreachable", step="metadata", deadline="metadata", min_seconds=4.5,
        max_seconds=7, check=check_imds_black_hole),
    row("goalstate-500-streak", "goal state answers 500 five times",
        scenario={"goalstate": [{"status": 500, "repeat": 5}]}, http=FAST_HTTP,
        tree="reference", check=check_retried("goalstate", 5)),
    row("wireserver-503-for-4s", "every WireServer request answers 503 (Retry-After: 1) for 4 s",
        scenario={"wireserver": {"unavailable_for": 4, "retry_after": "1"}}, http=FAST_HTTP,
        min_seconds=3.5, tree="reference"),
    row("health-503-streak", "the Ready report answers 503 four times",
        scenario={"health": [{"status": 503, "repeat": 4}]}, http=FAST_HTTP,
        tree="reference", check=check_retried("health", 4)),
    row("goalstate-429-retry-after", "goal state answers 429 with Retry-After: 2",
        scenario={"goalstate": [{"status": 429, "retry_after": "2"}]}, http=FAST_HTTP,
        min_seconds=2, tree="reference", check=check_429),
    row("goalstate-503-retry-after-date", "goal state answers 503 with Retry-After as an HTTP date 5 s ahead",
        scenario=_retry_after_date, http=FAST_HTTP, min_seconds=1.5, tree="reference",
        check=all_of(check_retried("goalstate", 1), check_retry_after_date)),
    row("retry-after-beyond-deadline", "goal state answers 429 with Retry-After: 3600, always",
        scenario={"goalstate": [{"status": 429, "retry_after": "3600", "repeat": 100}]},
        timeout=4, exit=4, reports=(), step="goal_state", deadline="goal_state", min_seconds=3.5,
        max_seconds=6, check=check_retry_after_beyond_deadline,
        note="one last attempt just before the deadline"),
    row("goalstate-404", "goal state answers 404 (not a retried status)",
        scenario={"goalstate": [{"status": 404, "repeat": 5}]}, exit=5, reports=(), step="goal_state",
        max_seconds=5),
    row("goalstate-retry-after-garbage", "goal state answers 503 with Retry-After: soon (unusable)",
        scenario={"goalstate": [{"status": 503, "headers": {"Retry-After": "soon"}}]}, http=FAST_HTTP,
        tree="reference", check=all_of(check_retried("goalstate", 1), check_garbage_retry_after),
        note="ignored: the backoff applies"),
    row("goalstate-dropped", "goal state connections closed without an answer, three times",
        scenario={"goalstate": [{"drop": True, "repeat": 3}]}, http=FAST_HTTP, tree="reference"),
    row("goalstate-read-timeout", "goal state answers after 3 s; read_timeout is 1 s",
        scenario={"goalstate": [{"delay": 3}]}, http=dict(FAST_HTTP, read_timeout=1),
        min_seconds=1, tree="reference", check=check_read_timeout),
    # --- the goal state and the health report --------------------------------------------------
    row("health-410-new-incarnation", "the Ready report answers 410 and the goal state moves from 3 to 4",
        scenario={"incarnation": 3, "health": [{"status": 410, "new_incarnation": 4}]},
        incarnation=4, tree="any", check=check_410, note="Ready echoes the new incarnation"),
    row("health-410-forever", "every health report answers 410 with a new incarnation",
        scenario={"health": [{"status": 410, "new_incarnation": True, "repeat": 20}]},
        exit=4, reports=(), step="report", tree="any", check=check_410_forever,
        note="state not written, unit still enabled"),
    row("goalstate-moves-before-report", "the goal state moves to incarnation 7 between the first fetch and Ready",
        scenario={"goalstate": [{}, {"new_incarnation": 7}]}, incarnation=7, tree="any", check=check_moved),
    row("health-400-rejected", "WireServer rejects the Ready report with 400",
        scenario={"health": [{"status": 400}]}, exit=5, reports=(), step="report", tree="any",
        check=check_health_400, note="state NOT written, unit still enabled: the next boot retries"),
    row("wireserver-gone-before-ready", "the goal state fetched for Ready is dropped until the deadline",
        scenario={"goalstate": [{}, {"drop": True, "repeat": 1000}]}, http=FAST_HTTP, timeout=3,
        exit=4, reports=(), step="report", deadline="report", tree="any", check=check_report_lost,
        note="steps applied, state NOT written, unit still enabled: the next boot retries"),
    row("goalstate-html-200", "goal state answers 200 with an HTML error page",
        scenario={"goalstate": [{"body": "<html><body>502 Bad Gateway</body></html>",
                                 "headers": {"Content-Type": "text/html"}}]},
        exit=5, reports=(), step="goal_state", max_seconds=5),
    row("health-400-log-says-why", "WireServer rejects the Ready report with 400; what does the log say?",
        scenario={"health": [{"status": 400}]}, exit=5, reports=(), step="report", tree="any",
        check=check_log_tells_why, note="the log says the WireServer refused, not that it did not answer"),
    row("no-role-instance-twice", "goal state without RoleInstance twice",
        scenario={"goalstate": [{"no_role_instance": True, "repeat": 2}]}, tree="reference",
        check=all_of(check_retried("goalstate", 2), logged("has no RoleInstance yet", 2))),
    row("no-role-instance-persistent", "goal state never has a RoleInstance",
        scenario={"goalstate": [{"no_role_instance": True, "repeat": 50}]}, exit=5, reports=(),
        step="goal_state", max_seconds=8),
    row("goalstate-truncated", "goal state cut at half its Content-Length, twice",
        scenario={"goalstate": [{"truncate": True, "repeat": 2}]}, http=FAST_HTTP, tree="reference",
        check=all_of(check_retried("goalstate", 2), logged("cut short", 2))),
    row("goalstate-oversized-10mb", "goal state padded to 10 MiB (well-formed XML)",
        scenario={"goalstate": [{"oversize": 10 * MiB}]}, exit=5, reports=(), step="goal_state",
        max_seconds=5, check=check_one_request("goalstate"), note="refused as hostile, not retried"),
    row("goalstate-billion-laughs", "goal state is an entity-expansion bomb",
        scenario={"goalstate": [{"body": open(BILLION_LAUGHS).read(), "repeat": 5}]},
        exit=5, reports=(), step="goal_state", max_seconds=5),
    row("goalstate-trickle-then-ready", "goal state trickles at 100 B/s twice; attempt_timeout is 1 s",
        scenario={"goalstate": [{"trickle": 100, "repeat": 2}]},
        http=dict(FAST_HTTP, attempt_timeout=1), min_seconds=2, tree="reference",
        check=check_too_slow(2), note="each slow attempt cut at 1 s and retried"),
    row("goalstate-trickle-deadline", "goal state always trickles at 50 B/s (shipped attempt timeout 60 s)",
        scenario={"goalstate": [{"trickle": 50, "repeat": 100}]}, timeout=4, exit=4, reports=(),
        step="goal_state", deadline="goal_state", min_seconds=3.5, max_seconds=6,
        check=check_too_slow(1),
        note="the attempt is cut at the phase deadline"),
    # --- IMDS -------------------------------------------------------------------------------------
    row("imds-404-early-boot", "IMDS answers 404 three times (early boot)",
        scenario={"imds": [{"status": 404, "repeat": 3}]}, http=FAST_HTTP, tree="reference",
        check=check_retried("imds", 3)),
    row("imds-410-early-boot", "IMDS answers 410 three times (early boot)",
        scenario={"imds": [{"status": 410, "repeat": 3}]}, http=FAST_HTTP, tree="reference",
        check=check_retried("imds", 3)),
    row("imds-500-streak", "IMDS answers 500 four times",
        scenario={"imds": [{"status": 500, "repeat": 4}]}, http=FAST_HTTP, tree="reference",
        check=check_retried("imds", 4)),
    row("imds-400-api-version", "IMDS knows only api-version 2019-06-01 (400 for 2021-08-01)",
        scenario={"imds": {"api_versions": ["2019-06-01"]}}, tree="reference", check=check_fallback,
        violations=("is not known to this host",),
        note="falls back to 2019-06-01"),
    row("imds-truncated", "IMDS document cut at half its Content-Length, twice",
        scenario={"imds": [{"truncate": True, "repeat": 2}]}, http=FAST_HTTP, tree="reference",
        check=all_of(check_retried("imds", 2), logged("cut short", 2))),
    row("imds-oversized-10mb", "IMDS document padded to 10 MiB (valid JSON)",
        scenario={"imds": [{"oversize": 10 * MiB}]}, exit=5, reports=("Failed",),
        reason="invalid_fabric_response", step="metadata", check=check_one_request("imds")),
    row("imds-trickle-deadline", "IMDS always trickles at 50 B/s",
        scenario={"imds": [{"trickle": 50, "repeat": 100}]}, timeout=4, exit=4, reports=("Failed",),
        reason="fabric_unreachable", step="metadata", deadline="metadata", min_seconds=3.5,
        max_seconds=6, check=check_too_slow(1)),
    row("imds-invalid-json", "IMDS serves a body that is not JSON",
        scenario={"imds": {"raw_body": '{"compute": {"vmId": "RAW-BODY-MARKER", '}}, exit=5,
        reports=("Failed",), reason="invalid_fabric_response", step="metadata"),
    row("imds-no-os-profile", "IMDS document without compute.osProfile (specialized disk)",
        scenario={"imds": {"remove": ["compute.osProfile"]}}, exit=7, reports=("Failed",),
        reason="no_os_profile", step="checks"),
    row("imds-pool-vm", "extended.compute.ppsType is PreprovisionedVMV2 (a pool VM)",
        scenario={"imds": {"extended": {"compute": {"ppsType": "PreprovisionedVMV2"}}}}, exit=7,
        reports=("Failed",), reason="pre_provisioned_pool_vm", step="checks"),
    # --- hostile names and keys ----------------------------------------------------------------------
    row("hostile-computer-name-dotdot", "computerName '../x'", scenario={"computer_name": "../x"},
        exit=6, reports=("Failed",), reason="invalid_computer_name", step="hostname"),
    row("hostile-computer-name-300", "computerName of 300 characters", scenario={"computer_name": "a" * 300},
        exit=6, reports=("Failed",), reason="invalid_computer_name", step="hostname"),
    row("hostile-computer-name-underscore", "computerName 'a_b'", scenario={"computer_name": "a_b"},
        exit=6, reports=("Failed",), reason="invalid_computer_name", step="hostname"),
    row("hostile-admin-root", "adminUsername 'root'", scenario={"admin_username": "root"},
        exit=6, reports=("Failed",), reason="invalid_admin_username", step="user"),
    row("hostile-admin-option", "adminUsername '-oProxy'", scenario={"admin_username": "-oProxy"},
        exit=6, reports=("Failed",), reason="invalid_admin_username", step="user"),
    row("hostile-admin-nobody", "adminUsername 'nobody'", scenario={"admin_username": "nobody"},
        exit=6, reports=("Failed",), reason="invalid_admin_username", step="user"),
    row("hostile-key-smuggled-line", "a key with an embedded newline and a command= line",
        scenario={"public_keys": [ED25519 + '\ncommand="curl http://127.0.0.1/x | sh" ' + ED25519]},
        exit=6, reports=("Failed",), reason="invalid_ssh_key", step="ssh_keys"),
    row("hostile-key-type-mismatch", "an ssh-rsa key whose base64 is an ed25519 key",
        scenario={"public_keys": ["ssh-rsa " + ED25519_B64 + " mallory@x"]},
        exit=6, reports=("Failed",), reason="invalid_ssh_key", step="ssh_keys"),
    row("hostile-key-garbage", "a key that is garbage",
        scenario={"public_keys": ["ssh-ed25519 !!!not*base64!!! " + "A" * 60]},
        exit=6, reports=("Failed",), reason="invalid_ssh_key", step="ssh_keys"),
    row("key-path-outside-home", "a key whose path is /root/.ssh/authorized_keys",
        scenario={"public_keys": [{"keyData": ED25519, "path": "/root/.ssh/authorized_keys"}]},
        tree="reference", check=check_keys_in_home, note="installed in azureuser's home instead"),
    row("key-path-traversal", "a key whose path climbs out of the home with ..",
        scenario={"public_keys": [{"keyData": ED25519,
                                   "path": "/home/azureuser/../../etc/ssh/authorized_keys"}]},
        tree="reference", check=check_keys_in_home, note="installed in azureuser's home instead"),
    row("keys-1000", "1000 valid ed25519 keys", scenario={"public_keys": KEYS_1000},
        tree="any", check=check_1000_keys, max_seconds=10, timed="ssh_keys",
        note="all 1000 installed, in order"),
    row("keys-1001", "1001 keys, over the limit", scenario={"public_keys": KEYS_1001},
        exit=5, reports=("Failed",), reason="invalid_fabric_response", step="metadata"),
    # --- a hostile host ------------------------------------------------------------------------------
    row("disk-full-writing-keys", "azureuser exists; its home is a full 64 KiB tmpfs holding authorized_keys",
        image={"users": [("azureuser", 1000)]}, setup=full_home, exit=6, reports=("Failed",),
        reason="provisioning_step_failed", step="ssh_keys", message="No space left on device",
        tree="any", inspect=inspect_full_home, check=check_full_disk,
        note="no temp file, authorized_keys untouched",
        found="found: ENOSPC escaped Dir.write as OSError (reason=internal_error, exit 1, traceback); "
              "fixed in 14841b5"),
    row("etc-read-only", "`ROOT/etc` is a read-only bind mount",
        setup=read_only_etc, exit=6, reports=("Failed",), reason="provisioning_step_failed",
        step="hostname", message="Read-only file system",
        found="found: EROFS escaped Dir.write as OSError (reason=internal_error, exit 1, traceback); "
              "fixed in 14841b5"),
    row("dead-proxy-in-environment", "http_proxy/https_proxy/all_proxy point at a closed loopback port",
        env={"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
             "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
             "all_proxy": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9"},
        tree="reference", check=check_dead_proxy, note="no proxy used, no violation recorded"),
    # --- interrupted and concurrent runs ---------------------------------------------------------------
    *[row(f"kill-after-{step.replace('_', '-')}",
          f"SIGKILL of the process group after step {step}, then a new run",
          scenario=KILL_SCENARIO, play=kill_after(f"step {step}: done"), tree="reference",
          check=check_killed, note="converges to a clean run's tree, one Ready")
      for step in ("goal_state", "metadata", "checks", "hostname", "user", "ssh_keys", "sshd",
                   "host_keys")],
    row("kill-during-user", "SIGKILL while the user step runs (useradd), then a new run",
        scenario=KILL_SCENARIO, play=kill_after("step user: started"), tree="reference",
        check=check_killed, note="converges, one Ready, no shadow lock left"),
    row("kill-during-host-keys", "SIGKILL while ssh-keygen -A runs, then a new run",
        scenario=KILL_SCENARIO, play=kill_after("step host_keys: started"), tree="reference",
        check=check_killed, note="converges, one Ready, no temp key left"),
    row("kill-after-report", "SIGKILL after Ready was accepted, before the state is written",
        scenario=KILL_SCENARIO, play=kill_after("step report: done"), reports=("Ready", "Ready"),
        tree="reference", check=check_killed_after_ready,
        note="the known window: the new run provisions (idempotently) and reports Ready again"),
    row("kill-after-state", "SIGKILL after the state was written, before the unit is disabled",
        scenario=KILL_SCENARIO, play=kill_after("step state: done"), tree="reference",
        check=check_silent_after_state,
        note="the new run sees the state, disables the unit, says nothing to the WireServer"),
    row("two-at-once", "two azprov provision started at the same moment on one tree",
        scenario={"goalstate": [{"delay": 1}]}, play=play_two_at_once, tree="reference",
        check=check_two, note="one provisions; the other waits, then exits 0 (already provisioned) or 8"),
]

ROWS = {r.id: r for r in MATRIX}
assert len(ROWS) == len(MATRIX), "row ids must be unique"


# --- running rows --------------------------------------------------------------------------------

def execute(row: Row, tmp: str) -> Run:
    """Prepare the tree, start the emulator, play the row, and collect everything to check."""
    from azprov.fabric import FabricEmulator, Scenario

    os.makedirs(tmp)
    root = make_scratch_root(os.path.join(tmp, "root"), **dict(row.image))
    scenario = row.scenario_dict()
    ctx = Context(root, tmp, {"root": root, "scenario": scenario})
    with contextlib.ExitStack() as stack:
        extra = stack.enter_context((row.setup or nothing)(ctx))
        before = snapshot(root)
        fabric = FabricEmulator(Scenario.from_dict(scenario), wireserver=("127.0.0.1", 0),
                                imds=("127.0.0.1", 0))
        stack.callback(fabric.stop)
        fabric.start()
        played = (row.play or play_once)(row, ctx, fabric, list(extra), dict(row.env))
        if row.inspect is not None:
            row.inspect(ctx)
        return Run(requests=fabric.requests, reports=fabric.reports, before=before,
                   after=snapshot(root), temp=cli.temp_files(root), state=read_state(root),
                   unit_enabled=os.path.lexists(os.path.join(root, WANTS_LINK)), facts=ctx.facts,
                   **played)


class Reference:
    """A clean run's tree (default scenario), built once, for the rows that must converge to it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.lock = threading.Lock()
        self.tree: Optional[Dict[str, Tuple]] = None

    def get(self) -> Dict[str, Tuple]:
        from azprov.fabric import FabricEmulator, Scenario

        with self.lock:
            if self.tree is None:
                root = make_scratch_root(os.path.join(self.base, "reference", "root"))
                with FabricEmulator(Scenario()) as fabric:
                    result = run_azprov(
                        ["provision", "-v", "--root", root, "--wireserver", fabric.wireserver_url,
                         "--imds", fabric.imds_url, "--timeout", "20"], {}, 120)
                assert result["exit"] == 0, result["logs"]
                self.tree = comparable(snapshot(root))
            return self.tree


class Matrix:
    """Runs the selected rows in a small thread pool, longest first; ``result(id)`` waits."""

    def __init__(self, rows: List[Row], base: str, jobs: int) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
        self.reference = Reference(base)
        self.started = time.monotonic()
        self.futures = {
            r.id: self.pool.submit(execute, r, os.path.join(base, r.id))
            for r in sorted(rows, key=lambda r: (-max(r.max_seconds, r.min_seconds + 10), r.id))
        }

    def result(self, row_id: str) -> Run:
        return self.futures[row_id].result(timeout=900)

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()
        self.pool.shutdown(wait=True)


OBSERVED: Dict[str, dict] = {}


@pytest.fixture(scope="module")
def matrix(request, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: useradd --root, chown, mount")
    selected = [item.callspec.params["row"] for item in request.session.items
                if getattr(item, "callspec", None) is not None and item.module is request.module
                and isinstance(item.callspec.params.get("row"), Row)]
    jobs = int(os.environ.get("AZPROV_FAULT_MATRIX_JOBS", "3"))
    runner = Matrix(selected, str(tmp_path_factory.mktemp("fault-matrix")), jobs)
    try:
        yield runner
    finally:
        runner.close()
        record = os.environ.get("AZPROV_FAULT_MATRIX_RECORD")
        if record:
            with open(record, "w") as handle:
                json.dump({"rows": OBSERVED, "seconds": round(time.monotonic() - runner.started, 1),
                           "jobs": jobs}, handle, indent=1, sort_keys=True)


def description_fields(report: dict) -> Dict[str, str]:
    return dict(field.split("=", 1) for field in report["description"].split("|"))


def observe(run: Run) -> dict:
    """What happened, in the words of the doc's "observed" column."""
    reports = []
    for report in run.reports:
        if report["state"] == "Ready":
            reports.append(f"Ready (incarnation {report['incarnation']})")
        else:
            fields = description_fields(report) if report.get("description") else {}
            reports.append(f"ProvisioningFailed reason={fields.get('reason')} step={fields.get('step')}")
    failed_step = re.findall(r"provisioning failed in step (\w+)", run.logs)
    return {
        "exits": run.exits,
        "reports": reports,
        "failed_step": failed_step[-1] if failed_step else None,
        "elapsed": round(run.elapsed, 2),
        "wall": round(run.wall, 2),
        "phases": run.phases,
        "traceback": "Traceback" in run.logs,
        "temp_files": run.temp,
        "state_written": run.state is not None,
        "unit_enabled": run.unit_enabled,
    }


def check_row(row: Row, run: Run, reference: Reference) -> None:
    tail = "\n--- log ---\n" + run.logs[-4000:]
    # The exit code, and the one-line error for a failure.
    assert run.exit == row.exit, f"exit {run.exit}, expected {row.exit}" + tail
    if row.exit != 0:
        assert run.logs.rstrip().splitlines()[-1].startswith("azprov: "), tail
    # What the emulator accepted, and what azprov sent: never a malformed or proxied request.
    kinds = ["Ready" if r["state"] == "Ready" else "Failed" for r in run.reports]
    assert kinds == list(row.reports), f"reports {run.reports}" + tail
    assert all(r["valid"] for r in run.reports), run.reports
    unexpected = [(r["endpoint"], v) for r in run.requests for v in r["violations"]
                  if not any(allowed in v for allowed in row.violations)]
    assert unexpected == [], unexpected
    ready = [r for r in run.reports if r["state"] == "Ready"]
    for report in ready:
        assert report["incarnation"] == row.expected_incarnation
    for report in run.reports:
        if report["state"] == "Ready":
            continue
        assert (report["state"], report["substatus"]) == ("NotReady", "ProvisioningFailed")
        fields = description_fields(report)
        assert (fields["reason"], fields["step"]) == (row.reason, row.step), report["description"]
        # No DMI in a scratch tree: the VM id comes from IMDS, so a metadata failure has none.
        assert fields["vm_id"] == ("unknown" if row.step == "metadata" else VM_ID)
        assert fields["result"] == "error"
        assert len(report["description"]) <= 512
        if row.message:
            assert row.message in fields["message"], report["description"]
    if not row.reports and row.step:  # nobody to tell: the log still names the step
        assert f"provisioning failed in step {row.step}:" in run.logs, tail
    # The deadline: of the phase that must give up, and of the whole run.
    if row.deadline:
        phase = run.phases.get(row.deadline)
        assert phase is not None, f"no timing for step {row.deadline}: {run.phases}" + tail
        assert row.timeout - 0.5 <= phase <= row.timeout + 1, \
            f"step {row.deadline} took {phase:.2f} s with a {row.timeout:g} s deadline" + tail
    assert row.min_seconds <= run.elapsed <= row.max_seconds, \
        f"took {run.elapsed:.2f} s, expected {row.min_seconds:g}..{row.max_seconds:g} s" + tail
    # The tree: nothing half-written; the state only after Ready; the unit enabled until then.
    assert run.temp == [], run.temp
    if row.exit == 0 and ready:
        assert run.state is not None and run.state["vm_id"] == VM_ID
        assert run.state["incarnation"] == ready[-1]["incarnation"]
        assert not run.unit_enabled, "provisioned, yet the unit would run again next boot"
    else:
        assert run.state is None, "state written without Ready"
        assert run.unit_enabled, "not provisioned, yet the unit would not run next boot"
    if row.tree == "unchanged":
        changed = diff(run.before, run.after)
        assert set(changed) <= LOCK_ONLY, sorted(changed)
    elif row.tree == "reference":
        assert diff(reference.get(), comparable(run.after)) == {}
    # The log: no traceback for an expected outcome, no key material, no body.
    text = run.logs + run.stdout
    assert "Traceback" not in text, tail
    for secret in key_material(run.facts["scenario"]):
        assert secret not in text, "key material in the log"
    for marker in BODY_MARKERS:
        assert marker not in text, f"a request or response body in the log ({marker})"
    if row.check is not None:
        row.check(run)


def _param(r: Row):
    marks = [pytest.mark.xfail(strict=True, reason=r.xfail)] if r.xfail else []
    return pytest.param(r, id=r.id, marks=marks)


@pytest.mark.parametrize("row", [_param(r) for r in MATRIX])
def test_fault(row: Row, matrix: Matrix) -> None:
    run = matrix.result(row.id)
    OBSERVED[row.id] = observe(run)
    try:
        check_row(row, run, matrix.reference)
    except AssertionError as exc:
        OBSERVED[row.id]["verdict"] = "fail: " + (str(exc).splitlines() or ["?"])[0][:200]
        raise
    OBSERVED[row.id]["verdict"] = "pass"


def test_the_matrix_has_enough_rows() -> None:
    assert len(MATRIX) >= 25


def doc_ids(text: str) -> List[str]:
    return re.findall(r"^\| *\d+ *\| *`([a-z0-9-]+)` *\|", text, re.M)


def test_the_doc_lists_every_row() -> None:
    with open(DOC) as handle:
        ids = doc_ids(handle.read())
    assert ids == [r.id for r in MATRIX], "regenerate docs/fault-matrix.md (see this module's docstring)"


# --- the doc ----------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def observed_text(row: Row, seen: Optional[dict]) -> str:
    if not seen:
        return "not run"
    joiner = " and " if row.play is play_two_at_once else ", then "
    parts = ["exit " + joiner.join("SIGKILL" if e == -signal.SIGKILL else str(e) for e in seen["exits"])]
    parts.append("; ".join(seen["reports"]) if seen["reports"] else "no report")
    if not seen["reports"] and seen["failed_step"]:
        parts.append(f"failed in step {seen['failed_step']}")
    if row.deadline and row.deadline in seen.get("phases", {}):
        parts.append(f"phase {row.deadline} {seen['phases'][row.deadline]:.1f} s")
    if row.timed and row.timed in seen.get("phases", {}):
        parts.append(f"step {row.timed} took {seen['phases'][row.timed] * 1000:.0f} ms")
    if seen["traceback"]:
        parts.append("traceback in the log")
    if seen["temp_files"]:
        parts.append("temp files left: " + ", ".join(seen["temp_files"]))
    verdict = seen.get("verdict", "?")
    if row.xfail:
        parts.append(f"**{row.xfail}** (xfail)" if verdict != "pass" else "**passes: remove the xfail**")
    elif verdict != "pass":
        parts.append(f"**{verdict}**")
    else:
        parts.append("as expected")
    if row.found:
        parts.append(f"({row.found})")
    return "; ".join(parts)


def render(recorded: dict) -> str:
    rows = recorded.get("rows", {})
    lines = [
        "# Fault matrix",
        "",
        "Each row is a fault the fabric emulator plays (or a host condition) against the real",
        "`azprov provision --root DIR` on a scratch image tree, checked by `tests/test_fault_matrix.py`",
        "(`-m emulator`, root). For every row the test asserts the exit code, the health reports the",
        "emulator accepted (state, sub-status, and `reason=`/`step=` of a failure Description), the",
        "time against the row's deadline, the tree (no temp file, the state file only after Ready, the",
        "unit link present iff not provisioned, unchanged where the failure comes before any step, the",
        "same as a clean run's where the run recovers) and the `-v` log (no traceback, no served key",
        "material, no request or response body, and no request the emulator found malformed or proxied).",
        "",
        "Deadline rows pass `--timeout` (it caps both phase deadlines) and name the phase that must give up:",
        "the test times that phase from the log (`step X: started` to `provisioning failed in step X`) and",
        "asserts it lasted the deadline, -0.5/+1 s; the whole process gets deadline + 2 s, as start-up and",
        "exit take their share on a loaded machine. Rows not about the shipped backoff",
        "use `[http] backoff_initial = 0.05, backoff_max = 0.5` through `--config`. A row marked xfail is",
        "a known bug: the test asserts the right behaviour and fails until the code is fixed.",
        "",
        "Regenerate after a change (the observed column and times come from that run):",
        "",
        "```sh",
        "AZPROV_FAULT_MATRIX_RECORD=/tmp/matrix.json /usr/bin/python3 -m pytest tests/test_fault_matrix.py",
        "/usr/bin/python3 tests/test_fault_matrix.py /tmp/matrix.json > docs/fault-matrix.md",
        "```",
        "",
        f"Last recorded run: {len(rows)} of {len(MATRIX)} rows in {recorded.get('seconds', '?')} s "
        f"({recorded.get('jobs', '?')} at a time, 2 cores).",
        "",
        "| # | scenario | what the emulator does | expected outcome | observed outcome | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for number, r in enumerate(MATRIX, 1):
        seen = rows.get(r.id)
        elapsed = f"{seen['elapsed']:.1f}" if seen else ""
        lines.append(f"| {number} | `{r.id}` | {_cell(r.does)} | {_cell(r.expected_text())} | "
                     f"{_cell(observed_text(r, seen))} | {elapsed} |")
    lines += [
        "",
        "Times are seconds of the azprov process the row is about (the new run after a kill; the slower",
        "of two concurrent runs), from its first log line to its exit: the phase deadlines start there,",
        "after the interpreter has started. Other rows (and, on a shared machine, other work) run beside it.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        sys.stdout.write(render(json.load(handle)))
