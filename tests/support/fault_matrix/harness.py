"""The fault matrix harness: what a row is, how azprov is run and the host prepared, and the
checks every row gets.

A :class:`Row` says what the fabric emulator plays (a scenario dict), how the image tree is
prepared (``setup``: a context manager factory), how the CLI is run (``play``: once, killed and
restarted, two at once) and what must come out of it.  :func:`execute` plays one row and collects a
:class:`Run`; :class:`Matrix` runs the selected rows a few at a time, longest first;
:func:`check_row` asserts what every row must satisfy: the exit code, the health reports the
emulator accepted (with ``reason=`` and ``step=`` for a failure), the time it took, the tree (no
temp file left, the state file only after Ready, the unit link present iff not provisioned) and
the log (no traceback, no key material, no request or response body).  The rows themselves are in
:mod:`support.fault_matrix.rows`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from support.reports import read_fields
from support import cli
from support.fakes import ED25519
from support.scratch_root import (
    WANTS_LINK, comparable, diff, make_scratch_root, owner_mode_changes, read_state, snapshot,
)


VM_ID = "8b1e4c3d-52a7-4f6e-9c80-d3a2b7e615f4"  # the emulator's default compute.vmId
# What any failed run may leave: the run lock, the attempt history, the KVP report for the host,
# and (checked apart) the SSH host keys generated for break-glass logins.
LOCK_ONLY = {"run/azprov", "run/azprov/lock", "var/lib/azprov", "var/lib/azprov/attempts.json",
             "var/lib/hyperv", "var/lib/hyperv/.kvp_pool_1"}
HOST_KEYS_MADE_FOR = "var/lib/azprov/host-keys"
HOST_KEY_FILES = {f"etc/ssh/ssh_host_{kind}_key{pub}" for kind in ("rsa", "ecdsa", "ed25519")
                  for pub in ("", ".pub")}
# Existing paths whose owner or mode any run may change: azprov's own, and the admin user's keys
# file.  Everything else keeps its owner and mode, whatever the image or the metadata.
OWN_PATHS = ("var/lib/azprov", "var/lib/azprov/*", "run/azprov", "run/azprov/*",
             "etc/sudoers.d/90-azprov", "etc/ssh/sshd_config.d/10-azprov.conf", WANTS_LINK,
             "home/*/.ssh/authorized_keys", "etc/ssh/authorized_keys/*")
DEFAULT_TIMEOUT = 20.0

# Bodies azprov must never log: markers that only occur in goal states, IMDS documents, health
# reports and the emulator's error bodies.
BODY_MARKERS = ("<GoalState xmlns", "<Incarnation>", "<ExpectedState>", "<ContainerId>",
                "<RoleInstanceList>", "HostingEnvironmentConfig",
                '"osProfile"', '"azEnvironment"', '"publicKeys"', '"vmSize"',
                "<Health", "<GoalStateIncarnation>", "<SubStatus>", "scripted fault: HTTP",
                "RAW-BODY-MARKER")

ED25519_B64 = ED25519.split()[1]


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
    owner_changes: Tuple[str, ...] = ()  # more paths (globs) whose owner or mode may change

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


def mount_or_skip(*argv: str) -> None:
    done = subprocess.run(["mount", *argv], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:  # e.g. a container without CAP_SYS_ADMIN
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


def umount(path: str) -> None:
    if subprocess.run(["umount", path], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


@contextlib.contextmanager
def read_only_etc(ctx: Context) -> Iterator[List[str]]:
    etc = os.path.join(ctx.root, "etc")
    mount_or_skip("--bind", etc, etc)
    try:
        mount_or_skip("-o", "remount,bind,ro", etc)
        assert write_fails(etc), "the bind mount is not read-only"
        yield []
    finally:
        umount(etc)


def write_fails(directory: str) -> bool:
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


# --- running rows --------------------------------------------------------------------------------


_KEYS_LOCK = threading.Lock()
_KEYS: Dict[str, Tuple[bytes, int]] = {}
KEYLESS = ("kill-after-host-keys", "kill-during-host-keys")  # rows about generating the keys


def seed_host_keys(root: str) -> None:
    """Give the tree the SSH host keys a first boot generates (one set made with ``ssh-keygen -A``
    per session, copied with their modes).  azprov generates missing keys in the background and
    waits for them on every exit path (break-glass SSH), so without keys each row's time would
    be RSA key generation on this loaded machine instead of the fault's; the host-key rows start
    without keys, and tests/test_provision.py covers the keys on every path."""
    with _KEYS_LOCK:
        if not _KEYS:
            template = tempfile.mkdtemp(prefix="azprov-host-keys-")
            os.makedirs(os.path.join(template, "etc/ssh"))
            subprocess.run(["ssh-keygen", "-A", "-f", template], check=True, capture_output=True)
            for name in os.listdir(os.path.join(template, "etc/ssh")):
                path = os.path.join(template, "etc/ssh", name)
                with open(path, "rb") as f:
                    _KEYS[name] = (f.read(), os.stat(path).st_mode & 0o777)
            shutil.rmtree(template)
    for name, (content, mode) in _KEYS.items():
        path = os.path.join(root, "etc/ssh", name)
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, mode)
    # ... made by azprov for this VM (no DMI in a tree: no id), as a first run records them; without
    # this record the run would take them for an image's keys and make new ones (a new VM)
    os.makedirs(os.path.join(root, "var/lib/azprov"), mode=0o700, exist_ok=True)
    marker = os.path.join(root, HOST_KEYS_MADE_FOR)
    with open(marker, "w") as f:
        f.write("\n")
    os.chmod(marker, 0o600)


def execute(row: Row, tmp: str) -> Run:
    """Prepare the tree, start the emulator, play the row, and collect everything to check."""
    from azprov.fabric import FabricEmulator, Scenario

    os.makedirs(tmp)
    root = make_scratch_root(os.path.join(tmp, "root"), **dict(row.image))
    if row.id not in KEYLESS:
        seed_host_keys(root)
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
                seed_host_keys(root)
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


def description_fields(report: dict) -> Dict[str, str]:
    return dict(read_fields(report["description"]))


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
        assert fields["vm_id"] == ("unknown" if row.step in ("metadata", "goal_state") else VM_ID)
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
        if row.deadline == "metadata":  # IMDS is fetched from the start of the goal state step on
            phase += run.phases.get("goal_state", 0.0)
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
        assert set(changed) - HOST_KEY_FILES - {HOST_KEYS_MADE_FOR} <= LOCK_ONLY, sorted(changed)
    elif row.tree == "reference":
        assert diff(reference.get(), comparable(run.after)) == {}, diff(reference.get(), comparable(run.after))
    moved = owner_mode_changes(run.before, run.after, OWN_PATHS + row.owner_changes)
    assert moved == {}, f"owner or mode changed outside azprov's paths: {moved}"
    # The log: no traceback for an expected outcome, no key material, no body.
    text = run.logs + run.stdout
    assert "Traceback" not in text, tail
    for secret in key_material(run.facts["scenario"]):
        assert secret not in text, "key material in the log"
    for marker in BODY_MARKERS:
        assert marker not in text, f"a request or response body in the log ({marker})"
    if row.check is not None:
        row.check(run)
