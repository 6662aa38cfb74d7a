"""``azprov early-hostname``: the disc's host name before the network, on image trees with a real
disc image (genisoimage -udf) where the drive would be (a regular file stands in for the device in
a tree).  That the first DHCP request really carries the name is proven by the boot test
(tests/test_boot_naming.py, a real DHCP server); here: what it reads, what it writes, when it
does nothing."""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

from azprov import early_hostname
from azprov import state as state_file
from azprov.host import Host
from support import discs

VM_ID = "6e8b0f2c-2d4b-4a86-9b6a-3f1f2e0c9a11"


def with_disc(root: str, tmp_path, **ovf) -> Host:
    image = discs.genisoimage(tmp_path, discs.ovf_env(**ovf), "-udf", name="ovf.iso")
    os.makedirs(os.path.join(root, "dev"), exist_ok=True)
    shutil.copy(image, os.path.join(root, "dev/sr0"))
    return Host(root)


def hostname_file(root: str) -> str:
    with open(os.path.join(root, "etc/hostname")) as handle:
        return handle.read()


def test_the_disc_names_the_machine_before_the_network(scratch_root, tmp_path, config):
    host = with_disc(scratch_root, tmp_path, hostname="Web-01")
    assert early_hostname.run(host, config) == "web-01"
    assert hostname_file(scratch_root) == "web-01\n"
    with open(os.path.join(scratch_root, "etc/hosts")) as handle:
        assert "127.0.1.1\tweb-01" in handle.read()
    assert os.path.getsize(os.path.join(scratch_root, "dev/sr0")) > 0  # left for azprov provision


def test_no_disc_or_no_name_on_it_changes_nothing(scratch_root, tmp_path, config):
    assert early_hostname.run(Host(scratch_root), config) is None
    host = with_disc(scratch_root, tmp_path, hostname="")
    assert early_hostname.run(host, config) is None
    assert hostname_file(scratch_root) == "debian\n"


@pytest.mark.parametrize("name", ["bad_name!", "10.0.0.5", "localhost", "a" * 65])
def test_a_name_azprov_refuses_is_left_to_azprov_provision(scratch_root, tmp_path, config, name, caplog):
    host = with_disc(scratch_root, tmp_path, hostname=name)
    assert early_hostname.run(host, config) is None
    assert hostname_file(scratch_root) == "debian\n"
    assert "host name not set before the network" in caplog.text


def test_a_disc_that_is_not_a_disc_is_only_a_warning(scratch_root, config, caplog):
    os.makedirs(os.path.join(scratch_root, "dev"), exist_ok=True)
    with open(os.path.join(scratch_root, "dev/sr0"), "wb") as handle:
        handle.write(os.urandom(64 * 1024))
    assert early_hostname.run(Host(scratch_root), config) is None  # never mounted either
    assert hostname_file(scratch_root) == "debian\n"


def test_an_already_provisioned_vm_keeps_its_name(scratch_root, tmp_path, config):
    host = with_disc(scratch_root, tmp_path, hostname="other-name")
    dmi = os.path.join(scratch_root, "sys/class/dmi/id")
    os.makedirs(dmi, exist_ok=True)
    with open(os.path.join(dmi, "product_uuid"), "w") as handle:
        handle.write(VM_ID + "\n")
    state_file.save(host, state_file.State(vm_id=VM_ID, incarnation=1, container_id="c",
                                           instance_id="i", ready_at="2024-01-01T00:00:00+00:00"))
    assert early_hostname.skip_reason(host, config) is not None
    assert early_hostname.run(host, config) is None
    assert hostname_file(scratch_root) == "debian\n"


@pytest.mark.parametrize("section,key", [("provisioning", "set_hostname"), ("media", "read")])
def test_turned_off_in_the_configuration(scratch_root, tmp_path, config, section, key):
    host = with_disc(scratch_root, tmp_path, hostname="web-01")
    off = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **{key: False})})
    assert early_hostname.skip_reason(host, off) == f"[{section}] {key} = false"
    assert early_hostname.run(host, off) is None
    assert hostname_file(scratch_root) == "debian\n"


def test_another_provisioner_keeps_the_name(tmp_path, config):
    from support.scratch_root import make_scratch_root

    root = make_scratch_root(str(tmp_path / "root"), cloud_init=True)
    host = with_disc(root, tmp_path, hostname="web-01")
    assert "cloud-init" in (early_hostname.skip_reason(host, config) or "")
    assert early_hostname.run(host, config) is None
    assert hostname_file(root) == "debian\n"
