"""Refusals: other provisioners, pool VMs, no osProfile."""

from __future__ import annotations

import dataclasses
import os

import pytest

from azprov import errors, guards
from azprov.host import Host
from support.fakes import FakeRunner, live_host, metadata
from support.scratch_root import make_scratch_root


def root_with(tmp_path, **kwargs) -> Host:
    return Host(make_scratch_root(str(tmp_path / "root"), **kwargs))


def test_a_clean_image_has_no_other_provisioner(tmp_path, config):
    host = root_with(tmp_path)
    assert guards.other_provisioners(host) == []
    guards.check_other_provisioners(host, config.provisioning)


def test_walinuxagent_enabled_and_provisioning_is_refused(tmp_path, config):
    host = root_with(tmp_path, waagent=True)
    with pytest.raises(errors.OtherProvisioner) as caught:
        guards.check_other_provisioners(host, config.provisioning)
    assert caught.value.reason == "other_provisioner_active" and caught.value.exit_code == 7
    assert "WALinuxAgent" in str(caught.value) and "refuse_other_provisioners" in str(caught.value)


@pytest.mark.parametrize("conf", ["Provisioning.Agent=disabled\n",
                                  "Provisioning.Enabled=n\nProvisioning.Agent=disabled\n"])
def test_walinuxagent_for_extensions_only_is_accepted(tmp_path, conf, caplog, config):
    import logging

    caplog.set_level(logging.INFO, logger="azprov")
    host = root_with(tmp_path, waagent=True, waagent_conf=conf)
    assert guards.waagent_provisions(host) is None
    guards.check_other_provisioners(host, config.provisioning)
    assert guards.waagent_extensions_only(host)
    assert "for VM extensions only" in caplog.text


@pytest.mark.parametrize("conf", ["Provisioning.Agent=auto\n", "Provisioning.Agent=waagent\n",
                                  "# Provisioning.Agent=disabled\nProvisioning.Agent=auto\n", "",
                                  # ignored since WALinuxAgent 2.2.45 (see tests/test_waagent.py)
                                  "Provisioning.Enabled=n\n", "Provisioning.Agent=cloud-init\n"])
def test_walinuxagent_that_would_provision_is_still_refused(tmp_path, conf, config):
    host = root_with(tmp_path, waagent=True, waagent_conf=conf)
    assert not guards.waagent_extensions_only(host)
    with pytest.raises(guards.OtherProvisioner, match="WALinuxAgent"):
        guards.check_other_provisioners(host, config.provisioning)


def test_an_image_without_walinuxagent_is_not_extensions_mode(tmp_path):
    assert not guards.waagent_extensions_only(root_with(tmp_path))


def test_walinuxagent_installed_but_not_enabled_is_allowed(tmp_path):
    host = root_with(tmp_path, waagent=True)
    os.remove(host.path("/etc/systemd/system/multi-user.target.wants/walinuxagent.service"))
    assert guards.waagent_provisions(host) is None


def test_cloud_init_with_azure_is_refused(tmp_path, config):
    host = root_with(tmp_path, cloud_init=True)
    with pytest.raises(errors.OtherProvisioner, match="cloud-init"):
        guards.check_other_provisioners(host, config.provisioning)


def test_cloud_init_without_a_datasource_list_means_every_datasource(tmp_path):
    host = root_with(tmp_path, cloud_init=True, cloud_cfg="users: [default]\n")
    assert "default: every datasource" in guards.cloud_init_provisions(host)


def test_cloud_init_disabled_or_without_azure_is_allowed(tmp_path):
    host = root_with(tmp_path, cloud_init=True)
    open(host.path("/etc/cloud/cloud-init.disabled"), "w").close()
    assert guards.cloud_init_provisions(host) is None
    host = root_with(tmp_path / "2", cloud_init=True, cloud_cfg="datasource_list: [ Azure ]\n")
    os.makedirs(host.path("/etc/cloud/cloud.cfg.d"))
    open(host.path("/etc/cloud/cloud.cfg.d/99-local.cfg"), "w").write(
        "datasource_list:\n  - NoCloud  # local\n  - None\nother: 1\n")
    assert guards.cloud_init_provisions(host) is None


def test_cloud_init_disabled_on_the_kernel_command_line_of_a_live_host(tmp_path):
    root = root_with(tmp_path, cloud_init=True).root
    disabled = live_host(root, FakeRunner(), cmdline=["quiet", "cloud-init=disabled"])
    assert guards.cloud_init_provisions(disabled) is None
    assert "cloud-init" in guards.cloud_init_provisions(live_host(root, FakeRunner(), cmdline=["quiet"]))


@pytest.mark.parametrize("text, expected", [
    ("datasource_list: [ Azure, None ]\n", ["Azure", "None"]),
    ("datasource_list: ['Azure']\n", ["Azure"]),
    ("datasource_list: [\n  NoCloud,\n  Azure\n]\n", ["NoCloud", "Azure"]),
    ("a: 1\ndatasource_list:\n- Azure\n-   'Ec2'\nb: 2\n", ["Azure", "Ec2"]),
    ("# datasource_list: [Azure]\n", None),
])
def test_datasource_list_forms(text, expected):
    assert guards.datasource_list(text) == expected


def test_the_refusal_can_be_turned_into_a_warning(tmp_path, config, caplog):
    host = root_with(tmp_path, waagent=True, cloud_init=True)
    relaxed = dataclasses.replace(config.provisioning, refuse_other_provisioners=False)
    guards.check_other_provisioners(host, relaxed)
    assert caplog.text.count("going ahead") == 2


def test_pool_vms_and_missing_os_profiles_are_refused():
    with pytest.raises(errors.PoolVm) as caught:
        guards.check_metadata(metadata(pps_type="Running"))
    assert caught.value.exit_code == 7 and caught.value.reason == "pre_provisioned_pool_vm"
    with pytest.raises(errors.NoOsProfile):
        guards.check_metadata(metadata(os_profile=False))
    guards.check_metadata(metadata(pps_type="None"))
