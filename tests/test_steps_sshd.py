"""sshd step and the sshd_config reader, on a scratch root."""

from __future__ import annotations

import os

import pytest

from azprov import errors
from azprov.host import Host
from azprov.host import sshd_config
from azprov.steps import sshd
from support.fakes import FakeRunner, metadata


@pytest.fixture
def host(scratch_root):
    return Host(scratch_root, runner=FakeRunner())


def write(host, path, text):
    os.makedirs(os.path.dirname(host.path(path)), exist_ok=True)
    open(host.path(path), "w").write(text)


@pytest.mark.parametrize("disable, value", [(True, "no"), (False, "yes")])
def test_the_drop_in_sets_the_password_policy(host, config, disable, value):
    md = metadata(disable_password_authentication=disable)
    assert sshd.apply(host, md, config.provisioning) is True
    text = open(host.path(sshd.DROPIN)).read()
    assert f"PasswordAuthentication {value}\n" in text
    assert oct(os.stat(host.path(sshd.DROPIN)).st_mode & 0o777) == "0o644"
    assert sshd_config.first(host, "PasswordAuthentication").source == sshd.DROPIN
    assert sshd.apply(host, md, config.provisioning) is False
    assert host.runner.calls == []  # no reload for an image tree


def test_without_include_sshd_config_is_not_rewritten(host, config, caplog):
    write(host, "/etc/ssh/sshd_config", "PasswordAuthentication yes\nUsePAM yes\n")
    assert sshd.apply(host, metadata(disable_password_authentication=False), config.provisioning) is False
    assert not host.lexists(sshd.DROPIN)
    assert open(host.path("/etc/ssh/sshd_config")).read() == "PasswordAuthentication yes\nUsePAM yes\n"
    assert "does not include" in caplog.text and "PasswordAuthentication yes" in caplog.text


@pytest.mark.parametrize("files, disable, where", [
    # an image drop-in sorting before azprov's
    ({"/etc/ssh/sshd_config.d/05-image.conf": "PasswordAuthentication yes\n"}, True,
     "05-image.conf line 1, read before"),
    ({"/etc/ssh/sshd_config.d/00-image.conf": "passwordauthentication=No\n"}, False,
     "00-image.conf line 1"),
    # sshd_config itself, above the Include
    ({"/etc/ssh/sshd_config": "PasswordAuthentication yes\nInclude /etc/ssh/sshd_config.d/*.conf\n"},
     True, "sshd_config line 1, read before"),
    # no Include: sshd's default, or the image's line
    ({"/etc/ssh/sshd_config": "UsePAM yes\n"}, True, r"sshd's default \(yes\)"),
    ({"/etc/ssh/sshd_config": "PasswordAuthentication no\n"}, False, "does not include"),
])
def test_a_policy_the_image_overrides_fails_before_anything_changes(host, config, files, disable, where):
    for path, text in files.items():
        write(host, path, text)
    md = metadata(disable_password_authentication=disable)
    with pytest.raises(errors.SshdPolicyOverridden, match=where) as caught:
        sshd.check(host, md, config.provisioning)
    assert caught.value.reason == "sshd_password_policy_overridden"
    with pytest.raises(errors.SshdPolicyOverridden):
        sshd.apply(host, md, config.provisioning)
    assert not host.lexists(sshd.DROPIN)


def test_an_earlier_drop_in_with_the_same_value_and_a_later_one_are_fine(host, config):
    write(host, "/etc/ssh/sshd_config.d/05-image.conf", "PasswordAuthentication no\n")
    write(host, "/etc/ssh/sshd_config.d/50-cloud.conf", "PasswordAuthentication yes\n")
    sshd.check(host, metadata(), config.provisioning)
    assert sshd.apply(host, metadata(), config.provisioning) is True
    write(host, "/etc/ssh/sshd_config.d/05-image.conf", "# nothing\n")
    sshd.check(host, metadata(), config.provisioning)  # azprov's drop-in wins over 50-cloud


def test_a_match_block_and_pam_passwords_are_warnings(host, config, caplog):
    write(host, "/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n"
          "Match User bob\n  PasswordAuthentication yes\n")  # KbdInteractiveAuthentication: yes
    sshd.check(host, metadata(), config.provisioning)
    assert "inside a Match block" in caplog.text and "keyboard-interactive" in caplog.text


def test_a_symlinked_drop_in_directory_is_refused_by_the_check(host, config):
    import shutil

    shutil.rmtree(host.path(sshd_config.DROPIN_DIR))
    os.symlink("/tmp", host.path(sshd_config.DROPIN_DIR))
    with pytest.raises(errors.UnsafePath):
        sshd.check(host, metadata(), config.provisioning)


def test_no_sshd_no_change(host, config):
    os.remove(host.path("/etc/ssh/sshd_config"))
    assert sshd.apply(host, metadata(), config.provisioning) is False


def test_the_reader_follows_includes_in_order_and_skips_match_blocks(host):
    write(host, "/etc/ssh/sshd_config",
          "# comment\nInclude extra/*.conf\nMatch User bob\n  PasswordAuthentication yes\n"
          "Match all\nPort=2222\n")
    write(host, "/etc/ssh/extra/20-b.conf", "PasswordAuthentication no\nPort 22\n")
    write(host, "/etc/ssh/extra/10-a.conf", "AuthorizedKeysFile \"%h/.ssh/my keys\" .ssh/k2\n")
    found = [(d.keyword, d.value) for d in sshd_config.directives(host) if d.keyword != "include"]
    assert found == [("authorizedkeysfile", '"%h/.ssh/my keys" .ssh/k2'),
                     ("passwordauthentication", "no"), ("port", "22"), ("port", "2222")]
    assert sshd_config.authorized_keys_files(host) == ["%h/.ssh/my keys", ".ssh/k2"]
    assert sshd_config.includes(host, "/etc/ssh/extra/10-azprov.conf")
    assert not sshd_config.includes(host, sshd.DROPIN)


def test_include_loops_end(host):
    write(host, "/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config\nPort 1\n")
    assert [d.value for d in sshd_config.directives(host) if d.keyword == "port"][0] == "1"


@pytest.mark.parametrize("pattern, expected", [
    (".ssh/authorized_keys", "/home/al/.ssh/authorized_keys"),
    ("%h/.ssh/authorized_keys", "/home/al/.ssh/authorized_keys"),
    ("/etc/ssh/keys/%u", "/etc/ssh/keys/al"),
    ("%h/100%%/k", "/home/al/100%/k"),
    ("~/.ssh/k", "/home/al/.ssh/k"),
])
def test_expand(pattern, expected):
    assert sshd_config.expand(pattern, home="/home/al", user="al") == expected


def test_a_live_sshd_is_reloaded_without_waiting_on_its_job(scratch_root, config):
    from support.fakes import live_host

    runner = FakeRunner()
    sshd.apply(live_host(scratch_root, runner), metadata(), config.provisioning)
    assert runner.calls == [["systemctl", "--no-block", "try-reload-or-restart", "ssh.service", "sshd.service"]]
