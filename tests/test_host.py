"""Host: the seam to the machine, on a scratch tree (never the real host)."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest

from azprov.errors import CommandFailed, StepFailed, UnsafePath
from azprov.host import CommandResult, Host, split_path
from azprov.host.probes import NOT_LIVE, LiveProbes
from support.cli import requires_root
from support.fakes import FakeRunner


@pytest.fixture
def host(tmp_path):
    (tmp_path / "etc").mkdir()
    return Host(str(tmp_path), runner=FakeRunner())


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def temp_files(root) -> list:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".azprov.tmp")]


def test_an_image_tree_is_never_live(host):
    assert not host.live
    assert not host.probes.systemd_running() and not host.probes.selinux_enabled()
    assert host.probes.processes("sshd") == []
    assert host.root_option() == ["--root", host.root]
    assert Host("/").root_option("-f") == []


def test_paths_map_under_the_root_and_refuse_dot_dot(host):
    assert host.path("/etc/hostname") == os.path.join(host.root, "etc", "hostname")
    assert host.path("/") == host.root
    with pytest.raises(UnsafePath):
        split_path("/etc/../../outside")
    with pytest.raises(ValueError):
        split_path("relative/path")


def test_write_file_is_atomic_with_mode_and_owner(host):
    assert host.write_file("/etc/hostname", b"vm1\n", mode=0o640, uid=0, gid=0) is True
    path = host.path("/etc/hostname")
    assert open(path, "rb").read() == b"vm1\n"
    assert mode_of(path) == 0o640
    assert temp_files(host.root) == []


def test_unchanged_content_mode_and_owner_is_no_write(host):
    host.write_file("/etc/hostname", b"vm1\n")
    inode = os.stat(host.path("/etc/hostname")).st_ino
    assert host.write_file("/etc/hostname", b"vm1\n") is False
    assert os.stat(host.path("/etc/hostname")).st_ino == inode


def test_a_mode_change_alone_keeps_the_content(host):
    host.write_file("/etc/hostname", b"vm1\n", mode=0o600)
    assert host.write_file("/etc/hostname", b"vm1\n", mode=0o644) is True
    assert mode_of(host.path("/etc/hostname")) == 0o644


def test_missing_parents_are_created_only_when_asked(host):
    with pytest.raises(StepFailed, match="does not exist"):
        host.write_file("/etc/new/dir/file", b"x")
    host.write_file("/etc/new/dir/file", b"x", parents=0o750)
    assert mode_of(host.path("/etc/new")) == 0o750
    assert mode_of(host.path("/etc/new/dir")) == 0o750


def test_a_symlinked_directory_on_the_path_is_refused(host, tmp_path):
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.mkdir()
    os.symlink(str(outside), host.path("/etc/sudoers.d"))
    with pytest.raises(UnsafePath, match="symbolic link"):
        host.write_file("/etc/sudoers.d/90-azprov", b"x")
    assert list(outside.iterdir()) == []


def test_a_symlink_as_the_file_itself_is_refused_and_left_alone(host, tmp_path):
    target = tmp_path / "target"
    target.write_text("precious")
    os.symlink(str(target), host.path("/etc/hostname"))
    with pytest.raises(UnsafePath):
        host.write_file("/etc/hostname", b"vm1\n")
    with pytest.raises(UnsafePath):
        host.read_file("/etc/hostname")
    assert target.read_text() == "precious"
    assert os.path.islink(host.path("/etc/hostname"))


def test_a_failed_check_leaves_the_old_file_and_no_temp_file(host):
    host.write_file("/etc/sudoers", b"old\n", mode=0o440)
    seen = []

    def check(path):
        seen.append((path, open(path, "rb").read(), mode_of(path)))
        raise StepFailed("rejected")

    with pytest.raises(StepFailed):
        host.write_file("/etc/sudoers", b"new\n", mode=0o440, check=check)
    assert open(host.path("/etc/sudoers"), "rb").read() == b"old\n"
    assert seen and seen[0][1:] == (b"new\n", 0o440)  # the check saw the complete file, final mode
    assert os.path.dirname(seen[0][0]) == host.path("/etc")  # in the same directory
    assert temp_files(host.root) == []


def test_a_stale_temp_file_from_a_killed_run_is_replaced(host):
    stale = host.path("/etc/.hostname.azprov.tmp")
    open(stale, "w").write("half")
    host.write_file("/etc/hostname", b"vm1\n")
    assert not os.path.exists(stale)


def test_remove_and_symlink(host):
    assert host.remove("/etc/nothing") is False
    assert host.remove("/no/such/dir/file") is False
    with host.open_dir("/etc") as directory:
        assert directory.symlink("/usr/lib/x", "link") is True
        assert directory.symlink("/usr/lib/x", "link") is False
        assert directory.readlink("link") == "/usr/lib/x"
    assert host.remove("/etc/link") is True
    assert not host.lexists("/etc/link")


def test_resolve_keeps_absolute_links_inside_the_root(host):
    os.makedirs(host.path("/usr/lib/systemd/system"))
    open(host.path("/usr/lib/systemd/system/x.service"), "w").write("[Unit]\n")
    os.symlink("usr/lib", host.path("/lib"))
    os.symlink("/etc/passwd", host.path("/etc/escape"))  # absolute: the root's, not the host's
    assert host.resolve("/lib/systemd/system/x.service") == "/usr/lib/systemd/system/x.service"
    assert host.exists("/lib/systemd/system/x.service")
    assert host.resolve("/etc/escape") == "/etc/passwd"
    assert host.read_text("/etc/escape") is None  # the root has no passwd; the host's is not read


def test_find_program_looks_in_the_roots_command_path_not_this_machines(host):
    """An image's own tools, as ``which`` would find them there: executable regular files on
    COMMAND_PATH, absolute links resolved inside the root."""
    for directory in ("usr/sbin", "usr/lib/tool", "usr/local/bin"):
        os.makedirs(host.path(f"/{directory}"))
    os.symlink("usr/sbin", host.path("/sbin"))
    open(host.path("/usr/lib/tool/real"), "w").write("#!/bin/false\n")
    os.chmod(host.path("/usr/lib/tool/real"), 0o755)
    os.symlink("/usr/lib/tool/real", host.path("/usr/sbin/tool"))  # absolute: the root's
    assert host.find_program("tool") == "/usr/sbin/tool"
    os.symlink("/usr/bin/env", host.path("/usr/sbin/env"))  # this machine has it, the root not
    assert os.path.exists("/usr/bin/env") and host.find_program("env") is None
    open(host.path("/usr/sbin/plain"), "w").write("")  # not executable
    open(host.path("/usr/local/bin/local"), "w").write("")  # off COMMAND_PATH
    os.chmod(host.path("/usr/local/bin/local"), 0o755)
    assert host.find_program("plain") is None and host.find_program("local") is None
    assert Host("/").find_program("env") in ("/usr/bin/env", "/bin/env")


def test_glob_within_the_root(host):
    for name in ("a.conf", "b.conf", "c.txt", ".hidden.conf"):
        open(host.path(f"/etc/{name}"), "w").write("")
    assert host.glob("/etc/*.conf") == ["/etc/a.conf", "/etc/b.conf"]
    assert host.glob("/nowhere/*.conf") == []


def test_the_user_database_is_the_roots(host):
    open(host.path("/etc/passwd"), "w").write(
        "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken line\nalice:x:1000:1000::/home/alice:/bin/bash\n")
    open(host.path("/etc/group"), "w").write("sudo:x:27:bob,alice\nalice:x:1000:\n")
    open(host.path("/etc/shadow"), "w").write("alice:!$6$hash:19000:0:99999:7:::\n")
    open(host.path("/etc/login.defs"), "w").write("# x\nUID_MIN  500\nUID_MAX 60000\n")
    assert [u.name for u in host.accounts.users()] == ["root", "alice"]
    assert host.accounts.user("alice").home == "/home/alice"
    assert host.accounts.user("nobody") is None  # the build host has one; the root does not
    assert host.accounts.group("sudo").members == ("bob", "alice")
    assert host.accounts.password_field("alice").startswith("!")
    assert host.accounts.password_field("root") is None
    assert host.accounts.uid_min() == 500


def test_commands_run_as_argv_lists(host):
    result = host.run(["useradd", "--root", host.root, "alice"])
    assert result.returncode == 0
    assert host.runner.calls == [["useradd", "--root", host.root, "alice"]]


def test_a_failing_command_raises_with_its_last_line_and_logs_the_output(tmp_path, caplog):
    runner = FakeRunner(lambda argv: CommandResult(tuple(argv), 9, "", "line one\nuseradd: user exists\n"))
    host = Host(str(tmp_path), runner=runner)
    with pytest.raises(CommandFailed) as caught:
        host.run(["useradd", "alice"])
    assert caught.value.details == {"command": "useradd", "status": 9}
    assert "user exists" in str(caught.value)
    assert "line one" in caplog.text
    assert host.run(["false"], check=False).returncode == 9


def test_missing_binaries_and_timeouts_are_step_failures(tmp_path):
    def missing(argv, timeout, input):
        raise FileNotFoundError(argv[0])

    def slow(argv, timeout, input):
        raise subprocess.TimeoutExpired(argv, timeout)

    with pytest.raises(CommandFailed, match="not installed"):
        Host(str(tmp_path), runner=missing).run(["hostnamectl"])
    with pytest.raises(CommandFailed, match="within 5 s"):
        Host(str(tmp_path), runner=slow).run(["ssh-keygen"], timeout=5)


def test_the_real_runner_uses_no_shell_and_a_clean_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://proxy:3128")
    host = Host(str(tmp_path))
    result = host.run(["/usr/bin/env"])
    assert "http_proxy" not in result.stdout and "LC_ALL=C" in result.stdout
    assert host.run(["/bin/echo", "$(id)", ";", "rm"]).stdout.strip() == "$(id) ; rm"


@requires_root
def test_created_directories_get_the_owner_and_mode_asked_for(host):
    with host.open_dir("/home", create_mode=0o755) as home:
        with home.subdir("alice", create_mode=0o700, uid=1234, gid=1234) as alice:
            info = alice.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1234, 1234, 0o700)
    assert host.write_file("/home/alice/f", b"x", mode=0o600, uid=1234, gid=1234)
    assert os.stat(host.path("/home/alice/f")).st_uid == 1234


def test_a_root_that_is_not_a_directory_is_refused(tmp_path):
    with pytest.raises(StepFailed):
        Host(str(tmp_path / "missing"))


@requires_root
def test_a_read_only_or_full_file_system_is_a_step_failure_with_the_reason(tmp_path):
    """EROFS and ENOSPC become StepFailed naming the path, never an internal error."""
    import subprocess as sp

    target = tmp_path / "mnt"
    target.mkdir()
    if sp.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(target)],
              capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        host = Host(str(target))
        (target / "etc").mkdir()
        with pytest.raises(StepFailed, match="No space left on device") as caught:
            host.write_file("/etc/big", b"x" * 64 * 1024)
        assert caught.value.details["path"] == "/etc/big" and caught.value.details["errno"] == "ENOSPC"
        assert temp_files(str(target)) == []
        sp.run(["mount", "-o", "remount,ro", str(target)], check=True)
        with pytest.raises(StepFailed, match="Read-only file system"):
            host.write_file("/etc/hostname", b"vm1\n")
    finally:
        sp.run(["umount", str(target)], capture_output=True)


def test_a_missing_parent_is_a_step_failure(host):
    with pytest.raises(StepFailed, match="/nowhere does not exist"):
        host.write_file("/nowhere/file", b"x")


def test_an_image_tree_gets_the_not_live_probes(host):
    assert host.probes is NOT_LIVE and not host.live
    assert host.probes.kernel_hostname() is None and host.probes.kernel_command_line() == []
    assert not host.probes.systemd_running() and host.probes.processes("init") == []
    assert host.probes.default_interface() is None and not host.probes.networkd_running()


def test_the_live_probes_read_this_running_system():
    probes = Host("/").probes
    assert isinstance(probes, LiveProbes) and Host("/").live
    with open("/proc/self/comm") as handle:
        me = handle.read().strip()
    assert os.getpid() in [pid for pid, _argv in probes.processes(me)]
    assert probes.kernel_hostname() == os.uname().nodename
    with open("/proc/cmdline") as handle:
        assert probes.kernel_command_line() == handle.read().split()


def test_a_process_with_a_long_name_is_found_by_its_full_name(tmp_path):
    """The kernel cuts /proc/PID/comm to 15 characters (systemd-networkd runs as
    systemd-network): the probe must find the process by the name it was started as."""
    import shutil
    import subprocess

    program = tmp_path / "azprov-test-long-process-name"
    shutil.copy2(shutil.which("sleep"), program)
    process = subprocess.Popen([str(program), "30"])
    try:
        comm = ""
        for _ in range(100):  # until the child has exec'd the program
            with open(f"/proc/{process.pid}/comm") as handle:
                comm = handle.read().strip()
            if comm == "azprov-test-lon":
                break
            time.sleep(0.05)
        assert comm == "azprov-test-lon"
        probes = Host("/").probes
        assert process.pid in [pid for pid, _argv in probes.processes(program.name)]
        assert process.pid in [pid for pid, _argv in probes.processes("azprov-test-lon")]
        assert probes.processes("azprov-test-long-process-other") != []  # same 15 characters
        assert probes.processes("azprov-test-lo") == []
    finally:
        process.kill()
        process.wait()


def test_reads_never_wait_on_a_fifo_planted_in_the_tree(host):
    """A FIFO where a configuration file should be is not a file: read as absent, at once."""
    os.makedirs(host.path("/etc/azprov"))
    os.mkfifo(host.path("/etc/azprov/azprov.toml"))
    assert host.read_text("/etc/azprov/azprov.toml") is None
    with pytest.raises(UnsafePath, match="not a regular file"):
        host.read("/etc/azprov/azprov.toml", follow=True)
    with pytest.raises(UnsafePath, match="not a regular file"):
        host.read("/etc/azprov/azprov.toml", follow=False)


def test_entry_path_resolves_the_parents_in_the_root_but_not_the_entry(host, tmp_path):
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    os.makedirs(host.path("/image/dev"))
    os.symlink("/image/dev", host.path("/dev"))  # absolute: the image's own /image/dev
    os.symlink("/dev/sdb", host.path("/image/dev/sr0"))  # the entry itself is a link
    assert host.entry_path("/dev/sr0") == host.path("/image/dev/sr0")
    assert os.path.islink(host.entry_path("/dev/sr0"))
    assert host.entry_path("/") == host.root
    os.makedirs(outside)
    os.symlink(str(outside), host.path("/etc/ssh"))
    os.makedirs(host.path(str(outside)))
    with pytest.raises(UnsafePath, match="out of the image"):
        host.tool_path("/etc/ssh")  # ssh-keygen -f ROOT would write into the build host's dir
    os.makedirs(host.path("/etc/real-ssh"))
    os.symlink("real-ssh", host.path("/etc/ssh2"))  # relative, inside the tree: fine
    assert host.tool_path("/etc/ssh2") == os.path.realpath(host.path("/etc/real-ssh"))


def test_is_link_and_link_target_see_the_entry_itself_through_parents_resolved_in_the_root(host):
    os.makedirs(host.path("/image/units"))
    os.symlink("/image/units", host.path("/units"))  # absolute: the image's own /image/units
    os.symlink("/dev/null", host.path("/image/units/masked.service"))
    with open(host.path("/image/units/plain.service"), "w"):
        pass
    assert host.is_link("/units/masked.service")
    assert host.link_target("/units/masked.service") == "/dev/null"
    assert not host.is_link("/units/plain.service")
    assert host.link_target("/units/plain.service") is None
    assert host.link_target("/units/absent.service") is None
