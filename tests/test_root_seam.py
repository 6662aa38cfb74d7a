"""The ``--root`` seam: with an image tree, every read stays inside the tree.

Each test plants an *absolute* symlink in a scratch tree pointing at a path that exists on this
(build) machine with decoy content, and also at the same path inside the tree with the content
the image really has.  Resolved as the image would resolve it (the tree as ``/``), the link names
the in-tree file; followed by the build machine, it names the decoy.  azprov must read the tree's.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from azprov import deprovision, guards
from azprov.config import CONFIG_FILE, DROPIN_DIR, load_config
from azprov.endpoint import discover_wireserver
from azprov.errors import UnsafePath
from azprov.host import Host
from azprov.identity import PRODUCT_UUID, read_dmi_vm_id
from support.cli import azprov

IN_TREE_ID = "11111111-2222-3333-4444-555555555555"
DECOY_ID = "99999999-8888-7777-6666-555555555555"


@pytest.fixture
def tree(scratch_root):
    return scratch_root


def plant(tree: str, link: str, target: str, *, decoy: bytes, real: bytes, is_dir: bool = False,
          name: str = "") -> None:
    """``<tree><link>`` -> absolute ``target``; ``target`` on this machine holds ``decoy``, and
    ``<tree><target>`` holds ``real`` (for a directory, both as the file ``name`` inside it)."""
    for base, data in (("/", decoy), (tree, real)):
        where = os.path.join(base, target.lstrip("/"))
        file = os.path.join(where, name) if is_dir else where
        os.makedirs(os.path.dirname(file), exist_ok=True)
        with open(file, "wb") as handle:
            handle.write(data)
    path = os.path.join(tree, link.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
    os.symlink(target, path)


def test_the_configuration_file(tree, tmp_path):
    target = str(tmp_path / "outside" / "azprov.toml")
    plant(tree, "/" + CONFIG_FILE, target, decoy=b'[wireserver]\naddress = "10.9.9.9"\n',
          real=b'[wireserver]\naddress = "10.1.1.1"\n')
    assert str(load_config(Host(tree)).wireserver.address) == "10.1.1.1"
    shown = azprov("endpoint", "--root", tree, "--json")  # the CLI reads the tree's file too
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["address"] == "10.1.1.1"


def test_the_drop_in_directory(tree, tmp_path):
    target = str(tmp_path / "outside" / "dropins")
    plant(tree, "/" + DROPIN_DIR, target, decoy=b'[imds]\ndeadline = 11\n', real=b'[imds]\ndeadline = 22\n',
          is_dir=True, name="50-x.toml")
    assert load_config(Host(tree)).imds.deadline == 22.0


def test_the_dhcp_leases(tree, tmp_path):
    target = str(tmp_path / "outside" / "dhcp")
    lease = "lease {{\n  option unknown-245 {};\n  expire never;\n}}\n"
    plant(tree, "/var/lib/dhcp", target, decoy=lease.format("a:9:9:9").encode(),
          real=lease.format("a:1:1:1").encode(), is_dir=True, name="dhclient.eth0.leases")
    assert discover_wireserver(None, Host(tree)).address == "10.1.1.1"


def test_the_dmi_product_uuid(tree, tmp_path):
    target = str(tmp_path / "outside" / "product_uuid")
    plant(tree, "/" + PRODUCT_UUID, target, decoy=DECOY_ID.encode(), real=IN_TREE_ID.encode())
    os.makedirs(os.path.join(tree, "sys/firmware/efi"))  # Gen2: no byte swap
    assert read_dmi_vm_id(Host(tree)) == IN_TREE_ID


def test_the_guards(tree, tmp_path):
    for binary in ("usr/sbin/waagent", "usr/bin/cloud-init"):
        os.makedirs(os.path.join(tree, os.path.dirname(binary)), exist_ok=True)
        open(os.path.join(tree, binary), "w").close()
    target = str(tmp_path / "outside" / "cloud.cfg")
    plant(tree, "/etc/cloud/cloud.cfg", target, decoy=b"datasource_list: [ NoCloud ]\n",
          real=b"datasource_list: [ Azure ]\n")
    assert "Azure datasource (/etc/cloud/cloud.cfg)" in guards.cloud_init_provisions(Host(tree))


def test_deprovision_never_touches_the_build_machine(tree, tmp_path):
    target = str(tmp_path / "outside" / "dhcpcd")
    plant(tree, "/var/lib/dhcpcd", target, decoy=b"decoy", real=b"lease", is_dir=True, name="eth0.lease")
    host = Host(tree)
    planned = [a.description for a in deprovision.plan(host, None, False)]
    assert any("/var/lib/dhcpcd/eth0.lease" in text for text in planned)
    for action in deprovision.plan(host, None, False):
        try:
            action.run()
        except UnsafePath:  # a symlinked lease directory is refused: azprov writes through no link
            pass
    with open(os.path.join(target, "eth0.lease"), "rb") as handle:
        assert handle.read() == b"decoy"


# --- every file azprov reads under --root, each behind an absolute link ----------------------
#
# For each path below, the scratch tree's file (or directory) moves to <tree><outside>, and the
# path becomes an absolute link to <outside>, where this machine holds a decoy.  Resolved in the
# tree, the link finds the image's own content; followed on the build machine, the decoy.  Every
# reader of an image tree then runs (configuration, endpoint, identity, check, status, the
# provisioning disc, deprovision's plan and actions, and a whole provisioning with the real
# useradd/visudo/ssh-keygen), while inotify watches the decoys: not one may be opened.

IN_OPEN, IN_ACCESS = 0x20, 0x01

# (path in the tree, "file" or "dir", a file name to put in the directory)
READ_UNDER_ROOT = [
    ("/etc/azprov/azprov.toml", "file", None),
    ("/etc/azprov/azprov.toml.d", "dir", "50-decoy.toml"),
    ("/etc/azprov/disabled", "file", None),
    ("/etc/azprov", "dir", "azprov.toml"),
    ("/etc/passwd", "file", None),
    ("/etc/group", "file", None),
    ("/etc/shadow", "file", None),
    ("/etc/login.defs", "file", None),
    ("/etc/default/useradd", "file", None),
    ("/etc/default", "dir", "useradd"),
    ("/etc/skel", "dir", ".profile"),
    ("/etc/sudoers", "file", None),
    ("/etc/sudoers.d", "dir", "90-azprov"),
    ("/etc/ssh/sshd_config", "file", None),
    ("/etc/ssh/sshd_config.d", "dir", "50-decoy.conf"),
    ("/etc/ssh", "dir", "sshd_config"),
    ("/etc/hostname", "file", None),
    ("/etc/hosts", "file", None),
    ("/etc/machine-info", "file", None),
    ("/etc/machine-id", "file", None),
    ("/var/lib/dbus", "dir", "machine-id"),
    ("/etc/default/grub", "file", None),
    ("/etc/kernel", "dir", "cmdline"),
    ("/boot", "dir", "grub.cfg"),
    ("/etc/cloud", "dir", "cloud.cfg"),
    ("/etc/waagent.conf", "file", None),
    ("/etc/systemd/system", "dir", "azprov.service"),
    ("/usr/lib/systemd/system", "dir", "azprov.service"),
    ("/lib/systemd/system", "dir", "azprov.service"),
    ("/usr/bin/azprov", "file", None),
    ("/usr/lib/netplan", "dir", "00-default.yaml"),
    ("/usr/lib/NetworkManager", "dir", "system-connections"),
    ("/etc/systemd/network", "dir", "10-eth0.link"),
    ("/etc/netplan", "dir", "50-cloud-init.yaml"),
    ("/etc/network", "dir", "interfaces"),
    ("/etc/NetworkManager", "dir", "NetworkManager.conf"),
    ("/etc/udev/rules.d", "dir", "70-persistent-net.rules"),
    ("/etc/sysconfig", "dir", "network"),
    ("/run/systemd", "dir", "netif"),
    ("/var/lib/dhcp", "dir", "dhclient.eth0.leases"),
    ("/var/lib/dhclient", "dir", "dhclient-eth0.lease"),
    ("/var/lib/NetworkManager", "dir", "internal-eth0.lease"),
    ("/var/lib/dhcpcd", "dir", "eth0.lease"),
    ("/var/lib/dhcpcd5", "dir", "eth0.lease"),
    ("/var/lib/azprov", "dir", "state.json"),
    ("/var/lib/hyperv", "dir", ".kvp_pool_1"),
    ("/run/azprov", "dir", "lock"),
    ("/sys/class/dmi/id", "dir", "product_uuid"),
    ("/sys/firmware", "dir", "efi"),
    ("/sys/class/block", "dir", "sr1"),
    ("/dev", "dir", "sr0"),
    ("/home", "dir", "azureuser"),
]


class Watch:
    """inotify on the decoys: which of them anything on this machine opens or reads."""

    def __init__(self, top: str) -> None:
        import ctypes

        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.names = {}
        paths = [top] + [os.path.join(d, n) for d, dirs, files in os.walk(top) for n in dirs + files]
        for path in paths:
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), IN_OPEN | IN_ACCESS)
            assert wd >= 0, (path, os.strerror(ctypes.get_errno()))
            self.names[wd] = path

    def opened(self):
        import struct

        found = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return sorted(set(found))
            offset = 0
            while offset < len(data):
                wd, _mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
                found.append(os.path.join(self.names[wd], name) if name else self.names[wd])
                offset += 16 + length

    def close(self) -> None:
        os.close(self.fd)


def plant_over(tree: str, link: str, outside: str, kind: str, name) -> None:
    """Move the tree's ``link`` (if any) to ``<tree><outside>``, put a decoy at ``outside`` on this
    machine, and make ``<tree><link>`` an absolute symlink to ``outside``."""
    here = os.path.join(tree, link.lstrip("/"))
    inside = os.path.join(tree, outside.lstrip("/"))
    os.makedirs(os.path.dirname(inside), exist_ok=True)
    if os.path.lexists(here):
        shutil.move(here, inside)
    elif kind == "dir":
        os.makedirs(inside)
    else:
        open(inside, "w").close()
    os.makedirs(os.path.dirname(here), exist_ok=True)
    if kind == "dir":
        os.makedirs(outside)
        with open(os.path.join(outside, name), "w") as handle:
            handle.write("DECOY\n")
    else:
        os.makedirs(os.path.dirname(outside), exist_ok=True)
        with open(outside, "w") as handle:
            handle.write("DECOY\n")
    os.symlink(outside, here)


def read_everything(tree: str) -> None:
    """Every reader of an image tree azprov has, each allowed to refuse."""
    from azprov import check, status
    from azprov.config import Config
    from azprov.errors import AzprovError
    from azprov.media import disc
    from azprov.provision import provision
    from support.fakes import FakeFabric, metadata

    def attempt(function):
        try:
            function()
        except AzprovError:
            pass

    attempt(lambda: load_config(Host(tree)))
    attempt(lambda: discover_wireserver(None, Host(tree)))
    attempt(lambda: read_dmi_vm_id(Host(tree)))
    attempt(lambda: check.run_checks(Host(tree)))
    attempt(lambda: status.collect(Host(tree)))
    attempt(lambda: disc.read_ovf_env(Host(tree), mount=False))
    attempt(lambda: provision(Host(tree), Config(), connect=FakeFabric(metadata()).connect))
    attempt(lambda: status.collect(Host(tree)))
    attempt(lambda: check.run_checks(Host(tree)))
    for action in deprovision.plan(Host(tree), None, True):
        attempt(action.run)


@pytest.mark.skipif(os.geteuid() != 0, reason="provisions a scratch tree with the real useradd (root)")
@pytest.mark.parametrize("link, kind, name", READ_UNDER_ROOT, ids=[row[0] for row in READ_UNDER_ROOT])
def test_no_read_under_root_follows_an_absolute_link_out(tree, tmp_path, link, kind, name):
    outside = str(tmp_path / "outside" / link.strip("/").replace("/", "_"))
    plant_over(tree, link, outside, kind, name)
    watch = Watch(outside)
    try:
        # the watch sees a read through the link on this machine: the test can fail
        decoy = os.path.join(tree, link.lstrip("/"))
        if kind == "dir":
            os.listdir(decoy)
        else:
            open(decoy).close()
        assert watch.opened(), "inotify saw nothing: this test could not fail"
        read_everything(tree)
        assert watch.opened() == []
    finally:
        watch.close()
