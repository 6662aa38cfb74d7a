"""Admin user step: validation, commands, and the real useradd --root on a scratch root."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from typing import Optional

import pytest
from hypothesis import example, given, strategies as st

from azprov import errors
from azprov.errors import InvalidMetadata
from azprov.host import CommandResult, Host, accounts
from azprov.steps import user
from support.cli import requires_root
from support.fakes import FakeRunner, metadata
from support.scratch_root import make_scratch_root, snapshot
from support.strategies import ANY_TEXT, fuzz


def temp_files(root) -> list:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".azprov.tmp")]


@pytest.mark.parametrize("name", ["azureuser", "_svc", "a-b_c1", "a" * 32, "bob", "AzureUser", "BOB"])
def test_portable_names_are_accepted(scratch_root, name):
    assert Host(scratch_root).accounts.admin_name(name) == name


@pytest.mark.parametrize("name", [
    "root", "-oProxy", "-oProxyCommand=sh", "Admin", "1abc", "a" * 33, "a b", "user$", "", "sshd",
    "nobody", "daemon", "www-data", "admin", "../etc", "al\nice", "sudo", "ROOT", "Nobody",
])
def test_bad_and_reserved_names_are_refused(scratch_root, name):
    with pytest.raises(errors.InvalidUsername) as caught:
        Host(scratch_root).accounts.admin_name(name)
    assert caught.value.reason == "invalid_admin_username"


def test_existing_system_accounts_and_groups_are_refused(tmp_path):
    root = make_scratch_root(str(tmp_path / "r"), users=[("svc", 500), ("bob", 1500), ("huge", 65000)])
    host = Host(root)
    with pytest.raises(errors.InvalidUsername, match="uid 500"):
        host.accounts.admin_name("svc")
    with pytest.raises(errors.InvalidUsername, match="uid 65000"):
        host.accounts.admin_name("huge")
    with pytest.raises(errors.InvalidUsername, match="system group"):
        host.accounts.admin_name("plugdev")
    assert host.accounts.admin_name("bob") == "bob"


def test_an_existing_user_is_updated_with_these_commands(tmp_path, config):
    root = make_scratch_root(str(tmp_path / "r"), users=[("azureuser", 1000)])
    runner = FakeRunner()
    host = Host(root, runner=runner)
    assert user.apply(host, metadata(), config.provisioning) is True
    assert runner.calls[0] == ["usermod", "--root", host.root, "-a", "-G", "sudo", "--", "azureuser"]
    assert runner.calls[1] == ["usermod", "--root", host.root, "-L", "--", "azureuser"]
    assert runner.commands() == ["usermod", "usermod"]
    assert not host.lexists("/etc/sudoers.d/90-azprov")  # the flow's, from the record: azprov.sudoers


def test_the_first_admin_group_that_exists_is_used(tmp_path, config):
    root = make_scratch_root(str(tmp_path / "r"), users=[("azureuser", 1000)])
    runner = FakeRunner()
    user.ensure_admin_group(Host(root, runner=runner), "azureuser", ("wheel", "adm", "sudo"))
    assert runner.calls[0][-3:] == ["adm", "--", "azureuser"]


def test_no_admin_group_is_a_warning(tmp_path, caplog):
    root = make_scratch_root(str(tmp_path / "r"), users=[("azureuser", 1000)])
    runner = FakeRunner()
    assert user.ensure_admin_group(Host(root, runner=runner), "azureuser", ("wheel",)) is False
    assert runner.calls == [] and "none of the admin groups" in caplog.text


@requires_root
def test_useradd_creates_the_admin_user_in_the_image(scratch_root, config):
    host = Host(scratch_root)
    assert user.apply(host, metadata(admin_username="azureuser"), config.provisioning) is True
    entry = host.accounts.user("azureuser")
    assert entry.uid >= 1000 and entry.home == "/home/azureuser" and entry.shell == "/bin/bash"
    assert host.accounts.group("azureuser").gid == entry.gid  # its own group
    assert "azureuser" in host.accounts.group("sudo").members
    assert host.accounts.password_field("azureuser").startswith("!")
    home = os.stat(host.path("/home/azureuser"))
    assert (home.st_uid, home.st_gid) == (entry.uid, entry.gid)
    assert os.path.exists(host.path("/home/azureuser/.profile"))  # from the image's skel
    before = snapshot(scratch_root)
    assert user.apply(host, metadata(admin_username="azureuser"), config.provisioning) is False
    assert snapshot(scratch_root) == before


@requires_root
def test_a_new_user_joins_the_admin_group_in_its_own_useradd(scratch_root, config):
    """One process fewer on the first boot's critical path: useradd -G, no usermod -a -G."""
    from azprov.host import run_subprocess

    calls = []

    def recording(argv, timeout, input):
        calls.append(list(argv))
        return run_subprocess(argv, timeout, input)

    host = Host(scratch_root, runner=recording)
    assert user.apply(host, metadata(admin_username="azureuser"), config.provisioning) is True
    useradd = [argv for argv in calls if argv[0].endswith("useradd")]
    assert len(useradd) == 1 and useradd[0][useradd[0].index("-G") + 1] == "sudo"
    assert not [argv for argv in calls if argv[0].endswith("usermod") and "-G" in argv]
    assert "azureuser" in host.accounts.group("sudo").members


@requires_root
def test_an_existing_user_keeps_its_uid_and_files(tmp_path, config):
    root = make_scratch_root(str(tmp_path / "r"), users=[("azureuser", 1500)])
    open(os.path.join(root, "home/azureuser/notes"), "w").write("mine")
    host = Host(root)
    user.apply(host, metadata(admin_username="azureuser"), config.provisioning)
    assert host.accounts.user("azureuser").uid == 1500
    assert open(os.path.join(root, "home/azureuser/notes")).read() == "mine"
    assert "azureuser" in host.accounts.group("sudo").members


@requires_root
def test_a_group_of_that_name_is_joined(tmp_path, config):
    root = make_scratch_root(str(tmp_path / "r"))
    with open(os.path.join(root, "etc/group"), "a") as handle:
        handle.write("azureuser:x:1200:\n")
    with open(os.path.join(root, "etc/gshadow"), "a") as handle:
        handle.write("azureuser:*::\n")
    host = Host(root)
    user.apply(host, metadata(admin_username="azureuser"), config.provisioning)
    assert host.accounts.user("azureuser").gid == 1200


# --------------------------------------------------------------------------------------------
# properties (hypothesis): strategies and conventions in support/strategies.py


@pytest.fixture(scope="module")
def steps_host(tmp_path_factory):
    """A Host on a scratch image tree (system accounts as on Debian 12) for Accounts.admin_name."""
    return Host(make_scratch_root(str(tmp_path_factory.mktemp("steps") / "root")))


PORTABLE_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")  # upper case: as Azure and useradd

USERNAME_INPUTS = st.one_of(
    ANY_TEXT,
    st.from_regex(r"[a-z_][a-z0-9_-]{0,31}", fullmatch=True),
    st.tuples(st.from_regex(r"[a-z_][a-z0-9_-]{0,31}", fullmatch=True),
              st.sampled_from(["", "-", " ", "\t", "\x00", "\r", "\n", "$", "A", ":", "/", "..",
                               "\u0131", "\u212a", "x" * 32])).map("".join),
    st.sampled_from(["root", "nobody", "sshd", "daemon", "sudo", "admin", "-oProxyCommand=sh"]),
)


def check_username(host, username: str) -> Optional[str]:
    try:
        name = host.accounts.admin_name(username)
    except InvalidMetadata:
        return None
    assert name == username
    assert PORTABLE_USER.fullmatch(name), repr(name)
    assert name.lower() not in accounts.RESERVED
    entry = host.accounts.user(name)
    assert entry is None or entry.uid >= 1000
    return name


@fuzz(300)
@example("bob\n")
@given(USERNAME_INPUTS)
def test_username_validator_accepts_only_portable_non_system_names(steps_host, username):
    check_username(steps_host, username)


@fuzz(50)
@example("azureuser\n")
@given(st.from_regex(r"[a-z_][a-z0-9_-]{0,31}", fullmatch=True).map(lambda name: name + "\n"))
def test_username_validator_refuses_a_trailing_newline(steps_host, username):
    check_username(steps_host, username)


@requires_root
def test_an_upper_case_name_is_created_by_the_real_useradd(scratch_root, config):
    host = Host(scratch_root)
    assert user.apply(host, metadata(admin_username="AzureUser"), config.provisioning) is True
    entry = host.accounts.user("AzureUser")
    assert entry.home == "/home/AzureUser" and os.stat(host.path(entry.home)).st_uid == entry.uid


# --- the home: only the usual place, never a system account's or someone else's ------------------

def _with_passwd_line(tmp_path, line: str) -> str:
    root = make_scratch_root(str(tmp_path / "r"))
    with open(os.path.join(root, "etc/passwd"), "a") as handle:
        handle.write(line + "\n")
    return root


@pytest.mark.parametrize("home, message", [
    ("/", "not below /home"), ("/root", "not below /home"), ("", "(empty)"),
    ("home/azureuser", "not below"), ("/home", "not below"), ("/home/../etc", "not below"),
    ("/var/lib/azureuser", "not below"), ("/etc/ssh", "not below"),
])
def test_a_home_outside_the_usual_place_is_refused(tmp_path, config, home, message):
    root = _with_passwd_line(tmp_path, f"azureuser:x:1000:1000::{home}:/bin/bash")
    with pytest.raises(errors.UnusableHome, match=message) as caught:
        user.check(Host(root), metadata(), config.provisioning)
    assert caught.value.reason == "unusable_home"


def test_the_useradd_default_home_counts_as_usual(tmp_path, config):
    root = _with_passwd_line(tmp_path, "azureuser:x:1000:1000::/srv/users/azureuser:/bin/bash")
    open(os.path.join(root, "etc/default/useradd"), "w").write("HOME=/srv/users\n")
    os.makedirs(os.path.join(root, "srv/users/azureuser"))
    user.check(Host(root), metadata(), config.provisioning)
    open(os.path.join(root, "etc/default/useradd"), "w").write("HOME=/etc\n")  # never a system dir
    with pytest.raises(errors.UnusableHome):
        user.check(Host(root), metadata(), config.provisioning)


@requires_root
@pytest.mark.parametrize("make, message", [
    (lambda home: os.symlink("/root", home), "symbolic link"),
    (lambda home: open(home, "w").close(), "not a directory"),
    (lambda home: (os.mkdir(home), os.chown(home, 4242, 4242)), "belongs to uid 4242"),
])
def test_a_new_users_home_that_is_a_trap_is_refused_before_anything_changes(scratch_root, config, make, message):
    make(os.path.join(scratch_root, "home/azureuser"))
    before = snapshot(scratch_root)
    with pytest.raises(errors.UnusableHome, match=message):
        user.check(Host(scratch_root), metadata(), config.provisioning)
    assert snapshot(scratch_root) == before


@requires_root
def test_an_existing_users_world_writable_home_is_refused(tmp_path, config):
    root = make_scratch_root(str(tmp_path / "r"), users=[("azureuser", 1500)])
    os.chmod(os.path.join(root, "home/azureuser"), 0o777)
    with pytest.raises(errors.UnusableHome, match="writable by group or others"):
        user.check(Host(root), metadata(), config.provisioning)


@requires_root
def test_a_root_owned_leftover_home_becomes_the_new_users(scratch_root, config):
    home = os.path.join(scratch_root, "home/azureuser")
    os.mkdir(home, 0o755)
    open(os.path.join(home, "notes"), "w").write("from the image build")
    host = Host(scratch_root)
    user.check(host, metadata(), config.provisioning)
    assert user.apply(host, metadata(), config.provisioning) is True
    entry = host.accounts.user("azureuser")
    info = os.stat(home)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (entry.uid, entry.gid, 0o700)
    assert os.stat(os.path.join(home, "notes")).st_uid == 0  # only the directory itself


@pytest.mark.parametrize("shell", ["/usr/sbin/nologin", "/bin/false"])
def test_an_existing_account_that_cannot_log_in_is_refused(tmp_path, shell):
    root = _with_passwd_line(tmp_path, f"azureuser:x:1000:1000::/home/azureuser:{shell}")
    with pytest.raises(errors.InvalidUsername, match="cannot log in"):
        Host(root).accounts.admin_name("azureuser")


@pytest.mark.parametrize("home", ["/home/../root", "/", "/etc", "relative"])
def test_a_useradd_default_home_outside_the_usual_place_is_refused_for_a_new_user(scratch_root, config, home):
    open(os.path.join(scratch_root, "etc/default/useradd"), "w").write(f"HOME={home}\n")
    with pytest.raises(errors.UnusableHome):
        user.check(Host(scratch_root), metadata(), config.provisioning)


# --- account database locks left by an interrupted tool --------------------------------------------

def plant_lock(root: str, db: str, pid: int) -> None:
    """What shadow-utils leaves when killed while it holds ``db``: ``/etc/<db>.<pid>`` holding the
    PID, hard-linked as ``/etc/<db>.lock``."""
    pid_file = os.path.join(root, "etc", f"{db}.{pid}")
    with open(pid_file, "w") as handle:
        handle.write(f"{pid}\0")
    os.link(pid_file, os.path.join(root, "etc", f"{db}.lock"))


@requires_root
def test_a_lock_whose_pid_runs_another_program_no_longer_blocks_useradd(scratch_root, config):
    """After a power cut the dead tool's PID may be another process's (here: this test's own
    python): shadow-utils then takes the lock for held and every useradd fails.  (In an image
    tree nothing runs, so every lock there is stale; which PIDs count as holders on a running
    system is the next test's.)"""
    plant_lock(scratch_root, "passwd", os.getpid())
    plant_lock(scratch_root, "group", os.getpid())
    blocked = subprocess.run(["useradd", "--root", scratch_root, "-m", "-U", "--", "probe"],
                             capture_output=True, text=True)
    assert blocked.returncode != 0 and "lock" in blocked.stderr, blocked.stderr  # the hazard is real
    host = Host(scratch_root)
    assert user.apply(host, metadata(admin_username="azureuser"), config.provisioning) is True
    assert host.accounts.user("azureuser") is not None
    assert not [name for name in os.listdir(os.path.join(scratch_root, "etc"))
                if re.fullmatch(r"(passwd|group)\.(lock|\d+)", name)]


def test_a_lock_held_by_a_running_account_tool_is_left_alone(tmp_path):
    from support.fakes import FakeProbes

    root = make_scratch_root(str(tmp_path / "r"))
    plant_lock(root, "shadow", 4242)
    plant_lock(root, "gshadow", 4343)
    os.mkdir(os.path.join(root, "etc", "passwd.lock"))  # not what shadow-utils makes
    host = Host(root, probes=FakeProbes(processes={"chpasswd": [(4242, ["chpasswd"])]}))
    assert user.clear_stale_locks(host) == ["/etc/gshadow.4343", "/etc/gshadow.lock"]
    left = sorted(n for n in os.listdir(os.path.join(root, "etc")) if re.search(r"\.(lock|\d+)$", n))
    assert left == ["passwd.lock", "shadow.4242", "shadow.lock"]
    assert user.clear_stale_locks(Host(root, probes=FakeProbes())) == ["/etc/shadow.4242", "/etc/shadow.lock"]
