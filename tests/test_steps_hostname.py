"""Hostname step (and DHCP publishing) on a scratch root."""

from __future__ import annotations

import re
import string
from typing import Optional

import pytest
from hypothesis import example, given, strategies as st

from azprov import errors
from azprov.errors import InvalidMetadata
from azprov.host import Host
from azprov.host.probes import default_route_interface
from azprov.steps import dhcp, hostname
from support.fakes import FakeRunner, live_host, metadata
from support.strategies import ANY_TEXT, fuzz


@pytest.fixture
def host(scratch_root):
    return Host(scratch_root, runner=FakeRunner())


def read(host, path):
    return open(host.path(path)).read()


@pytest.mark.parametrize("name, expected", [
    ("vm1", "vm1"),
    ("My-VM-01", "my-vm-01"),
    ("web.contoso.internal", "web.contoso.internal"),
    ("a" * 63, "a" * 63),
    ("x" * 64, None),  # one label of 64: over RFC 1123's 63
    ("0abc", "0abc"),
])
def test_valid_names(name, expected):
    if expected is None:
        with pytest.raises(errors.InvalidHostname):
            hostname.validate(name)
    else:
        assert hostname.validate(name) == expected


@pytest.mark.parametrize("name", [
    "../x", "x" * 300, "a" * 65, "two words", "under_score", "-lead", "trail-", "a..b", ".a", "a.",
    "", "tab\tname", "new\nline", "ümlaut", "semi;colon", "a/b",
    "10.0.0.5", "127.0.0.1", "1234", "vm.42", "localhost", "LOCALHOST", "localhost.localdomain",
    "web.localhost", "ip6-localhost", "0x7f000001", "0x7f.0x1",
])
def test_invalid_names_are_refused_with_the_reason(name):
    with pytest.raises(errors.InvalidHostname) as caught:
        hostname.validate(name)
    assert caught.value.reason == "invalid_computer_name"
    assert caught.value.exit_code == 6


def test_a_300_character_name_is_described_briefly():
    with pytest.raises(errors.InvalidHostname) as caught:
        hostname.validate("x" * 300)
    assert "300 characters" in str(caught.value) and len(str(caught.value)) < 120


def test_apply_writes_hostname_and_the_debian_hosts_line(host, config):
    assert hostname.apply(host, metadata(computer_name="Web-01"), config.provisioning) is True
    assert read(host, "/etc/hostname") == "web-01\n"
    hosts = read(host, "/etc/hosts")
    assert "127.0.1.1\tweb-01\n" in hosts and "debian" not in hosts
    assert "127.0.0.1\tlocalhost\n" in hosts and "ff02::2 ip6-allrouters" in hosts
    assert host.runner.calls == []  # an image tree: no hostname(1), no hostnamectl, no DHCP renewal


def test_apply_twice_changes_nothing(host, config):
    hostname.apply(host, metadata(computer_name="vm1"), config.provisioning)
    assert hostname.apply(host, metadata(computer_name="vm1"), config.provisioning) is False


def test_no_hosts_line_is_invented(host, config):
    open(host.path("/etc/hosts"), "w").write("127.0.0.1 localhost\n")
    hostname.apply(host, metadata(computer_name="vm1"), config.provisioning)
    assert read(host, "/etc/hosts") == "127.0.0.1 localhost\n"


def test_an_fqdn_maps_both_names():
    text = "127.0.0.1 localhost\n127.0.1.1 old.example old # keep\n"
    assert hostname.hosts_with_name(text, "new.example.com") == (
        "127.0.0.1 localhost\n127.0.1.1\tnew.example.com new\n")


def test_an_invalid_name_changes_nothing(host, config):
    with pytest.raises(errors.InvalidHostname):
        hostname.apply(host, metadata(computer_name="../x"), config.provisioning)
    assert read(host, "/etc/hostname") == "debian\n"


def test_default_interface_from_the_route_table():
    table = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
             "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
             "eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    assert default_route_interface(table) == "eth0"
    assert default_route_interface(table.splitlines()[0]) is None


def test_renew_commands_for_each_dhcp_client(tmp_path):
    def live(**probes):
        return live_host(str(tmp_path), FakeRunner(), **probes)

    networkd = live(networkd=True, processes={"systemd-network": [(10, ["/lib/systemd/systemd-networkd"])]})
    # renew would send the name networkd read when it configured the link (systemd #23244)
    assert dhcp.renew_commands(networkd, "eth0") == [["networkctl", "reconfigure", "eth0"]]
    nm = live(processes={"NetworkManager": [(11, ["NetworkManager"])]})
    assert dhcp.renew_commands(nm, "eth0") == [["nmcli", "device", "reapply", "eth0"]]
    argv = ["/sbin/dhclient", "-4", "-v", "-pf", "/run/dhclient.eth0.pid", "eth0"]
    dhclient = live(processes={"dhclient": [(12, argv)]})
    assert dhcp.renew_commands(dhclient, "eth0") == [
        ["/sbin/dhclient", "-r", "-4", "-v", "-pf", "/run/dhclient.eth0.pid", "eth0"], argv]
    # dhcpcd 9 rewrites its command line (setproctitle): found by comm, run by name
    dhcpcd = live(processes={"dhcpcd": [(13, ["dhcpcd: [manager] [ip4] [ip6]"])]})
    assert dhcp.renew_commands(dhcpcd, "eth0") == [["dhcpcd", "--rebind", "eth0"]]
    assert dhcp.renew_commands(live(), "eth0") == []


def test_a_live_host_renews_on_its_default_interface(scratch_root):
    runner = FakeRunner()
    host = live_host(scratch_root, runner, networkd=True, interface="eth1")
    assert dhcp.publish_hostname(host) is True
    assert runner.calls == [["networkctl", "reconfigure", "eth1"]]
    assert dhcp.publish_hostname(live_host(scratch_root, FakeRunner(), interface=None)) is False


def test_the_dhcp_client_is_not_asked_again_when_it_started_with_the_name(scratch_root, config):
    """azprov early-hostname set the name before the network: the client sent it from its first
    request, and a reconfigure would only take the link down and up again."""
    runner = FakeRunner()
    host = live_host(scratch_root, runner, networkd=True, kernel_hostname="vm9")
    hostname.apply(host, metadata(computer_name="vm9"), config.provisioning)
    assert "networkctl" not in runner.commands()
    runner = FakeRunner()
    host = live_host(scratch_root, runner, networkd=True, kernel_hostname="localhost")
    hostname.apply(host, metadata(computer_name="vm9"), config.provisioning)
    assert ["networkctl", "reconfigure", "eth0"] in runner.calls


def test_before_the_network_the_name_is_set_without_d_bus(scratch_root):
    runner = FakeRunner()
    host = live_host(scratch_root, runner, processes={})
    assert hostname.set_before_network(host, "vm9") is True
    assert runner.calls == [["sethostname", "vm9"]]
    assert read(host, "/etc/hostname") == "vm9\n"
    assert "127.0.1.1\tvm9" in read(host, "/etc/hosts")


def test_before_the_network_with_selinux_only_the_kernel_name_is_set(scratch_root):
    """hostnamed would label /etc/hostname itself; it does not run yet: azprov provision sets the
    static name later, with hostnamectl."""
    runner = FakeRunner()
    host = live_host(scratch_root, runner, selinux=True)
    before = read(host, "/etc/hostname")
    assert hostname.set_before_network(host, "vm9") is True
    assert runner.calls == [["sethostname", "vm9"]]
    assert read(host, "/etc/hostname") == before


def test_publishing_is_skipped_for_an_image_tree(host):
    assert dhcp.publish_hostname(host) is False
    assert host.runner.calls == []


def test_with_systemd_running_and_no_hostnamed_the_name_is_set_without_d_bus(scratch_root, config):
    """Early in the first boot hostnamed is not running: /etc/hostname and the kernel's name are
    set directly (what hostnamectl would have made hostnamed do), with no D-Bus activation."""
    runner = FakeRunner()
    host = live_host(scratch_root, runner)
    assert hostname.apply(host, metadata(computer_name="vm9"), config.provisioning) is True
    assert runner.calls[0] == ["sethostname", "vm9"]
    assert "hostnamectl" not in runner.commands()
    assert read(host, "/etc/hostname") == "vm9\n"
    assert "127.0.1.1\tvm9" in read(host, "/etc/hosts")


def test_with_hostnamed_running_hostnamectl_sets_the_name(scratch_root, config):
    runner = FakeRunner()
    host = live_host(scratch_root, runner, processes={"systemd-hostnam": [(42, ["/lib/systemd/systemd-hostnamed"])]})
    settings = config.provisioning
    assert hostname.apply(host, metadata(computer_name="vm9"), settings) is True
    assert runner.calls[0] == ["hostnamectl", "set-hostname", "vm9"]
    assert "sethostname" not in runner.commands()
    assert "127.0.1.1\tvm9" in read(host, "/etc/hosts")  # hostnamectl leaves /etc/hosts to us


def test_with_selinux_enabled_hostnamectl_sets_the_name(scratch_root, config):
    """SELinux from the probes (``host.probes``), not read by the step itself: hostnamed labels
    the file it writes."""
    runner = FakeRunner()
    host = live_host(scratch_root, runner, selinux=True)
    assert hostname.apply(host, metadata(computer_name="vm9"), config.provisioning) is True
    assert runner.calls[0] == ["hostnamectl", "set-hostname", "vm9"]


# --------------------------------------------------------------------------------------------
# properties (hypothesis): strategies and conventions in support/strategies.py


RFC1123_HOSTNAME = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)

HOSTNAME_ISH = st.lists(
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True), min_size=1, max_size=4
).map(".".join)

HOSTNAME_INPUTS = st.one_of(
    ANY_TEXT,
    HOSTNAME_ISH,
    st.tuples(HOSTNAME_ISH, st.sampled_from(["", "-", ".", "..", "_", " ", "\t", "\x00", "\u212a",
                                              "\u0130", "\uff41", "a" * 64, "\r", "\n", "/"]),
              st.booleans())
      .map(lambda t: t[1] + t[0] if t[2] else t[0] + t[1]),
    st.text(alphabet=string.ascii_letters + string.digits + "-.", max_size=80),
)


def check_hostname(computer_name: str) -> Optional[str]:
    try:
        name = hostname.validate(computer_name)
    except InvalidMetadata:
        return None
    assert isinstance(name, str)
    assert RFC1123_HOSTNAME.fullmatch(name), name
    assert all(len(label) <= 63 for label in name.split("."))
    assert len(name) <= 64
    assert not name.rsplit(".", 1)[-1].isdigit(), name  # never an IP address
    assert name not in hostname.LOOPBACK_NAMES and not name.endswith(".localhost"), name
    return name


def _names_this_vm(name: str) -> bool:
    name = name.lower()
    return not name.rsplit(".", 1)[-1].isdigit() and name not in hostname.LOOPBACK_NAMES \
        and not name.endswith(".localhost") and not hostname._is_inet_aton_address(name)


@fuzz(400)
@example("vm1")
@example("-vm")
@example("a..b")
@given(HOSTNAME_INPUTS.filter(lambda s: not s.endswith("\n")))  # see the xfail test below
def test_hostname_validator_accepts_only_rfc1123_names(computer_name):
    check_hostname(computer_name)


@fuzz(200)
@given(st.lists(
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True), min_size=1, max_size=5
).map(".".join).filter(lambda name: len(name) <= 64))
def test_hostname_validator_accepts_valid_names_lower_cased(computer_name):
    assert check_hostname(computer_name) == (computer_name.lower() if _names_this_vm(computer_name) else None)


@fuzz(100)
@example("10.0.0.5")
@given(st.lists(st.integers(0, 999).map(str), min_size=1, max_size=4).map(".".join))
def test_hostname_validator_refuses_addresses(computer_name):
    assert check_hostname(computer_name) is None


@fuzz(50)
@example("vm1\n")
@given(HOSTNAME_ISH.map(lambda name: name + "\n"))
def test_hostname_validator_refuses_a_trailing_newline(computer_name):
    check_hostname(computer_name)


@fuzz(50)
@example("\u212aVM")
@given(HOSTNAME_INPUTS)
def test_hostname_validator_never_rewrites_non_ascii(computer_name):
    name = check_hostname(computer_name)
    if name is not None:
        assert computer_name.isascii() and name == computer_name.lower()


def test_a_pretty_hostname_is_left_to_hostnamectl(scratch_root, config):
    """hostnamectl set-hostname also replaces a pretty host name: then only it is equivalent."""
    runner = FakeRunner()
    host = live_host(scratch_root, runner)
    host.write_file("/etc/machine-info", b'PRETTY_HOSTNAME="Build VM"\n')
    assert hostname.apply(host, metadata(computer_name="vm9"), config.provisioning) is True
    assert runner.calls[0] == ["hostnamectl", "set-hostname", "vm9"]


def test_without_systemd_a_live_host_gets_the_file_and_the_kernel_name(scratch_root, config):
    runner = FakeRunner()
    host = live_host(scratch_root, runner, systemd=False)
    assert hostname.apply(host, metadata(computer_name="vm9"), config.provisioning) is True
    assert runner.calls[0] == ["sethostname", "vm9"] and "hostnamectl" not in runner.commands()
    assert read(host, "/etc/hostname") == "vm9\n"


def test_set_kernel_hostname_is_a_no_op_for_an_image_tree(host):
    assert host.set_kernel_hostname("never-set") is False


def test_set_kernel_hostname_sets_the_kernel_name_in_a_private_uts_namespace(tmp_path):
    """The real syscall, in a UTS namespace of its own (root only), so this machine keeps its name."""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private UTS namespace")
    script = ("import socket; from azprov.host import Host; h = Host('/'); "
              "print(h.set_kernel_hostname('azprov-uts-test'), h.set_kernel_hostname('azprov-uts-test'), "
              "socket.gethostname())")
    before = subprocess.run(["hostname"], capture_output=True, text=True).stdout
    result = subprocess.run(["unshare", "--uts", sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False", "azprov-uts-test"]
    assert subprocess.run(["hostname"], capture_output=True, text=True).stdout == before


def test_check_refuses_a_symlinked_etc_hostname_before_anything_changes(scratch_root, config):
    import os

    from azprov import errors
    from azprov.host import Host
    from support.fakes import metadata

    path = os.path.join(scratch_root, "etc/hostname")
    os.remove(path)
    os.symlink("/etc/shadow", path)
    with pytest.raises(errors.UnsafePath, match="symbolic link"):
        hostname.check(Host(scratch_root), metadata(), config.provisioning)
