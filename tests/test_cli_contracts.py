"""The CLI's contracts that scripts rely on (issue 12), tried on the installed ``azprov`` program
as a subprocess, against the fabric emulator on loopback:

- commands that need root refuse first, as a real unprivileged user (``setpriv`` to nobody),
  with "must run as root" and exit 9, before anything is read or sent;
- with ``--json`` every failure prints one object ``{"error", "reason", "exit_code"}`` on stdout
  and keeps its exit code;
- every bad command-line value exits 2 (a bad or empty ``--wireserver`` too), while a bad
  configuration file stays 3;
- every command takes ``--json``; ``deprovision --json`` says what it removed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import pytest

from azprov import kvp, state
from azprov.cli import COMMANDS, NEEDS_ROOT, build_parser
from azprov.host import Host
from support import cli
from support.scratch_root import make_scratch_root, snapshot

pytestmark = pytest.mark.emulator

# the console script pip installed next to the interpreter running the tests (.venv/bin/azprov)
PROGRAM = os.path.join(os.path.dirname(sys.executable), "azprov")
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
FAILURE_KEYS = {"error", "reason", "exit_code"}


def run(*args: str, user: list = (), timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    program = [PROGRAM] if os.access(PROGRAM, os.X_OK) else cli.command()
    return subprocess.run([*user, *program, *args], capture_output=True, text=True, timeout=timeout,
                          env=cli.environment(), stdin=subprocess.DEVNULL, **kwargs)


def failure(result: subprocess.CompletedProcess, code: int, reason) -> dict:
    """The one JSON object a failing command prints with --json (the whole of stdout)."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    data = json.loads(result.stdout)  # exactly one object: anything else on stdout fails here
    assert set(data) == FAILURE_KEYS, data
    assert data["exit_code"] == code and data["reason"] == reason, data
    assert isinstance(data["error"], str) and data["error"], data
    return data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- root ----------------------------------------------------------------------------------------

def _can_drop_privileges() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    return run("--version", user=NOBODY).returncode == 0  # the checkout is readable by nobody


needs_nobody = pytest.mark.skipif(not _can_drop_privileges(),
                                  reason="needs root, setpriv and a checkout readable by nobody")


@pytest.fixture
def open_tree():
    """A scratch image tree and a broken configuration file that nobody could read: a command
    that read either before refusing would fail differently (exit 3), or change the tree."""
    base = tempfile.mkdtemp(prefix="azprov-contracts-")
    os.chmod(base, 0o755)
    try:
        root = make_scratch_root(os.path.join(base, "root"))
        broken = os.path.join(base, "broken.toml")
        with open(broken, "w") as handle:
            handle.write("[wireserver\n")
        os.chmod(broken, 0o644)
        yield root, broken
    finally:
        shutil.rmtree(base)


ROOT_COMMAND_ARGS = {
    "provision": ["--root", "{root}", "{fabric}"],
    "early-hostname": ["--root", "{root}"],
    "report-ready": ["--root", "{root}", "{fabric}"],
    "report-failure": ["--reason", "disk setup failed", "--root", "{root}", "{fabric}"],
    "deprovision": ["--force", "--user", "--root", "{root}"],
    "firewall": [],
    "status": ["--root", "{root}"],
    "check": ["--root", "{root}"],
    "temp-disk": ["--dry-run"],
}


def test_the_root_commands_are_the_documented_ones():
    assert set(ROOT_COMMAND_ARGS) == set(NEEDS_ROOT)
    man = open(os.path.join(cli.REPO, "docs", "azprov.8")).read()
    section = man.split(".SH EXIT STATUS\n", 1)[1].split("\n.SH ", 1)[0]
    assert ".B 9\n" in section
    for name in NEEDS_ROOT:
        assert ".B " + name.replace("-", "\\-") in section, name


@needs_nobody
@pytest.mark.parametrize("command", sorted(ROOT_COMMAND_ARGS))
def test_a_root_command_refuses_first_as_nobody(command, open_tree, emulator):
    root, broken = open_tree
    fabric = emulator()
    words = []
    for word in ROOT_COMMAND_ARGS[command]:
        words += cli.fabric_args(fabric) if word == "{fabric}" else [word.format(root=root)]
    before = snapshot(root)
    result = run(command, "--config", broken, "--json", *words, user=NOBODY)
    data = failure(result, 9, "must_run_as_root")
    assert "must run as root" in data["error"] and f"azprov {command} must run as root" in result.stderr
    assert fabric.requests == []  # nothing sent
    assert snapshot(root) == before  # nothing changed
    text = run(command, "--config", broken, *words, user=NOBODY)  # without --json: stderr only
    assert text.returncode == 9 and text.stdout == "" and "must run as root" in text.stderr


@needs_nobody
def test_commands_that_do_not_need_root_run_as_nobody(open_tree, emulator):
    root, _ = open_tree
    fabric = emulator({"incarnation": 5})
    result = run("goalstate", "--json", *cli.fabric_args(fabric), user=NOBODY)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["incarnation"] == 5
    for words in (["endpoint", "--root", root], ["config"], ["check", "--self-test"]):
        result = run(*words, user=NOBODY)
        assert result.returncode == 0, (words, result.stderr)


# -- --json failure objects ------------------------------------------------------------------


def test_unreachable_fabric_exit_4(tmp_path):
    port = free_port()  # nothing listens there: connection refused until the deadline
    result = run("goalstate", "--json", "--wireserver", f"127.0.0.1:{port}", "--timeout", "1")
    data = failure(result, 4, "fabric_unreachable")
    assert f"127.0.0.1:{port}" in data["error"] and data["error"] in result.stderr  # the log stays on stderr


def test_refused_report_exit_5(emulator):
    fabric = emulator({"health": [{"status": 400}]})
    result = run("report-ready", "--json", "--root", tempfile.mkdtemp(), *cli.fabric_args(fabric))
    failure(result, 5, "http_error")


def test_configuration_file_errors_stay_exit_3(tmp_path):
    path = tmp_path / "azprov.toml"
    path.write_text('[wireserver]\naddress = "http://127.0.0.1:0"\n')
    data = failure(run("config", "--json", "--config", str(path)), 3, "invalid_config")
    assert "[wireserver] address" in data["error"]
    path.write_text("[wireserver\n")
    failure(run("endpoint", "--json", "--config", str(path)), 3, "invalid_config")


@cli.requires_root
def test_a_failed_provisioning_exit_6_and_a_refusal_exit_7(scratch_root, emulator):
    fabric = emulator({"computer_name": "../x"})
    data = failure(run("provision", "--json", "--root", scratch_root, *cli.fabric_args(fabric)),
                   6, "invalid_computer_name")
    assert "../x" in data["error"] and [r["state"] for r in fabric.reports] == ["NotReady"]
    fabric = emulator({"imds": {"remove": ["compute.osProfile"]}})
    failure(run("provision", "--json", "--root", scratch_root, *cli.fabric_args(fabric)), 7, "no_os_profile")


HOLD_LOCK = """
import sys, time
from azprov import state
from azprov.host import Host
with state.acquire(Host(sys.argv[1]), wait=0):
    print("locked", flush=True)
    time.sleep(30)
"""


def test_another_run_holds_the_lock_exit_8(scratch_root, emulator):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, scratch_root], stdout=subprocess.PIPE,
                              text=True, env=cli.environment())
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run("deprovision", "--json", "--force", "--root", scratch_root)
        failure(result, 8, "already_running")
    finally:
        holder.kill()
        holder.wait()


def test_interrupted_exit_130(emulator):
    fabric = emulator({"wireserver": {"refuse_for": 60}})
    process = subprocess.Popen([PROGRAM, "goalstate", "-vv", "--json", *cli.fabric_args(fabric)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=cli.environment(), stdin=subprocess.DEVNULL)
    seen = ""
    while "attempt" not in seen:  # -vv logs every attempt: it is waiting for the fabric
        line = process.stderr.readline()
        assert line, seen
        seen += line
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    failure(subprocess.CompletedProcess(process.args, process.returncode, out, seen + err), 130, None)


# -- bad command-line values: exit 2 -------------------------------------------------------------

BAD_COMMAND_LINES = {
    "empty --wireserver": ["goalstate", "--wireserver", ""],
    "empty --wireserver=": ["goalstate", "--wireserver="],
    "https --wireserver": ["goalstate", "--wireserver", "https://127.0.0.1"],
    "port 0 --wireserver": ["report-ready", "--wireserver", "127.0.0.1:0"],
    "port out of range": ["metadata", "--imds", "127.0.0.1:65536"],
    "empty --imds": ["provision", "--imds", ""],
    "a path in --imds": ["metadata", "--imds", "http://127.0.0.1/metadata"],
    "zero --timeout": ["goalstate", "--timeout", "0"],
    "not a number --timeout": ["endpoint", "--timeout", "soon"],
    "--protocol": ["report-ready", "--protocol", "soap"],
    "--root that does not exist": ["status", "--root", "/nonexistent/azprov-test"],
    "--root that is a file": ["check", "--root", "/etc/hostname"],
    "empty --reason": ["report-failure", "--reason", " "],
    "unknown option": ["deprovision", "--everything"],
    "unknown command": ["provison"],
    "no command": [],
    "listener without a port": ["fabric", "serve", "--wireserver", "127.0.0.1", "--imds", "127.0.0.1:0"],
}


@pytest.mark.parametrize("name", sorted(BAD_COMMAND_LINES))
def test_every_bad_value_exits_2_and_says_so_as_json(name):
    words = BAD_COMMAND_LINES[name]
    plain = run(*words)
    assert plain.returncode == 2 and plain.stdout == "", plain
    assert "error: " in plain.stderr and "usage: " in plain.stderr
    data = failure(run(*words, "--json"), 2, None)
    assert data["error"] in plain.stderr


def test_an_empty_wireserver_never_means_discover(tmp_path):
    result = run("endpoint", "--json", "--root", str(tmp_path), "--wireserver", "")
    data = failure(result, 2, None)
    assert "empty address" in data["error"]
    assert "168.63.129.16" not in result.stdout + result.stderr


# -- --json everywhere -------------------------------------------------------------------------


def test_every_command_takes_json():
    for name in COMMANDS:
        parser = build_parser(only=name)
        words = {"report-failure": ["--reason", "x"], "fabric": ["disc", "--output", "x"]}.get(name, [])
        assert parser.parse_args([name, *words, "--json"]).json is True, name
    serve = build_parser(only="fabric").parse_args(["fabric", "serve", "--wireserver", "127.0.0.1:0",
                                                    "--imds", "127.0.0.1:0", "--json"])
    assert serve.json is True


@cli.requires_root
def test_deprovision_json_says_what_it_removed(scratch_root):
    host = Host(scratch_root)
    state.save(host, state.State(vm_id="vm-1", incarnation=1, container_id="c", instance_id="i",
                                 ready_at=state.now(), admin_username="azureuser"))
    open(host.path("/etc/ssh/ssh_host_ed25519_key"), "w").write("k")
    kvp.write(host, kvp.PROVISIONING_REPORT, "result=success")
    result = run("deprovision", "--json", "--force", "--root", scratch_root)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["root"] == host.root and data["unit_enabled"] is True
    assert {"/var/lib/azprov/state.json", "/etc/ssh/ssh_host_ed25519_key",
            "/var/lib/dhcp/dhclient.eth0.leases"} <= set(data["removed_files"])
    assert data["removed_kvp_records"] == ["PROVISIONING_REPORT"]
    assert data["emptied_files"] == ["/etc/machine-id"]
    assert data["removed_admin_users"] == [] and data["done"]
    for path in data["removed_files"]:
        assert not os.path.lexists(host.path(path)), path
    assert open(host.path("/etc/machine-id")).read() == ""


def test_deprovision_json_never_asks(scratch_root):
    before = snapshot(scratch_root)
    data = failure(run("deprovision", "--json", "--root", scratch_root), 2, "confirmation_required")
    assert "--force" in data["error"]
    assert snapshot(scratch_root) == before


def test_every_exit_code_is_documented_in_the_man_page_the_help_and_the_readme():
    from azprov.cli import EXIT_CODES_HELP
    from azprov.errors import ExitCode

    man = open(os.path.join(cli.REPO, "docs", "azprov.8")).read()
    section = man.split(".SH EXIT STATUS\n", 1)[1].split("\n.SH ", 1)[0]
    readme = open(os.path.join(cli.REPO, "README.md")).read()
    for code in [*(int(c) for c in ExitCode), 130]:
        assert f".B {code}\n" in section, code
        assert f"\n  {code} " in EXIT_CODES_HELP, code
        assert f"`{code}` " in readme, code
    for text in (section, EXIT_CODES_HELP, readme):
        assert '"exit_code"' in text or "exit_code" in text
