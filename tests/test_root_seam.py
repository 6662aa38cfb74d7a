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
    assert load_config(root=tree).wireserver.address == "10.1.1.1"
    shown = azprov("endpoint", "--root", tree, "--json")  # the CLI reads the tree's file too
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["address"] == "10.1.1.1"


def test_the_drop_in_directory(tree, tmp_path):
    target = str(tmp_path / "outside" / "dropins")
    plant(tree, "/" + DROPIN_DIR, target, decoy=b'[imds]\ndeadline = 11\n', real=b'[imds]\ndeadline = 22\n',
          is_dir=True, name="50-x.toml")
    assert load_config(root=tree).imds.deadline == 22.0


def test_the_dhcp_leases(tree, tmp_path):
    target = str(tmp_path / "outside" / "dhcp")
    lease = "lease {{\n  option unknown-245 {};\n  expire never;\n}}\n"
    plant(tree, "/var/lib/dhcp", target, decoy=lease.format("a:9:9:9").encode(),
          real=lease.format("a:1:1:1").encode(), is_dir=True, name="dhclient.eth0.leases")
    assert discover_wireserver(root=tree).address == "10.1.1.1"


def test_the_dmi_product_uuid(tree, tmp_path):
    target = str(tmp_path / "outside" / "product_uuid")
    plant(tree, "/" + PRODUCT_UUID, target, decoy=DECOY_ID.encode(), real=IN_TREE_ID.encode())
    os.makedirs(os.path.join(tree, "sys/firmware/efi"))  # Gen2: no byte swap
    assert read_dmi_vm_id(tree) == IN_TREE_ID


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
