"""azprov's sudoers drop-in (owned whole, from the record of admin users) and the audit of the
image's other sudo rules for ``azprov check``.  Real visudo where the file is written as root."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile

import pytest
from hypothesis import given, strategies as st

from azprov import admins, errors, sudoers
from azprov.host import CommandResult, Host
from support.cli import requires_root
from support.fakes import FakeRunner
from support.scratch_root import make_scratch_root
from support.strategies import fuzz

DROPIN = sudoers.DROPIN.lstrip("/")
PLANTED = "ALL ALL=(ALL) NOPASSWD:ALL"


def plant(root: str, text: str, mode: int = 0o440) -> None:
    path = os.path.join(root, DROPIN)
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def dropin(root: str) -> str:
    with open(os.path.join(root, DROPIN)) as handle:
        return handle.read()


def set_shadow(root: str, name: str, field: str) -> None:
    path = os.path.join(root, "etc/shadow")
    lines = [line if not line.startswith(name + ":") else f"{name}:{field}:19500:0:99999:7:::"
             for line in open(path).read().splitlines()]
    open(path, "w").write("\n".join(lines) + "\n")


def test_the_drop_in_lists_each_user_once_in_azprovs_form():
    text = sudoers.render([sudoers.Grant("alice"), sudoers.Grant("bob", ask_password=True)]).decode()
    assert text.splitlines()[1:] == ["alice ALL=(ALL) NOPASSWD:ALL", "bob ALL=(ALL) PASSWD:ALL"]
    assert sudoers.users(text) == ["alice", "bob"]
    assert sudoers.users(text + "evil ALL=(ALL) ALL\n# bob\n" + PLANTED + "\n") == ["alice", "bob"]


@pytest.mark.parametrize("name", ["ALL", "AZUREUSER", "OPS_1", "A"])
def test_names_sudo_reads_as_an_alias_or_every_user_are_refused(tmp_path, name):
    with pytest.raises(errors.InvalidUsername, match="all upper case") as caught:
        sudoers.check_name(name)
    assert caught.value.reason == "invalid_admin_username"
    root = make_scratch_root(str(tmp_path / "r"), users=[(name, 1000)])
    assert sudoers.grants_for(Host(root), [name]) == []  # a tampered record grants nothing either


@pytest.mark.parametrize("name", ["azureuser", "AzureUser", "aLL", "_OPS", "ops_1"])
def test_names_with_a_lower_case_letter_or_leading_underscore_are_user_names(name):
    assert sudoers.check_name(name) == name


def test_visudo_reads_an_upper_case_name_as_an_alias(tmp_path):
    """Why: the real visudo says an all-upper-case user is an undefined User_Alias."""
    path = tmp_path / "rule"
    path.write_text("AZUREUSER ALL=(ALL) NOPASSWD:ALL\n")
    result = subprocess.run(["visudo", "-c", "-f", str(path)], capture_output=True, text=True)
    assert 'User_Alias "AZUREUSER" referenced but not defined' in result.stderr + result.stdout


def test_grants_follow_the_accounts_password(tmp_path):
    root = make_scratch_root(str(tmp_path / "r"), users=[("alice", 1000), ("bob", 1001), ("svc", 500)])
    set_shadow(root, "bob", "$6$salt$hash")
    grants = sudoers.grants_for(Host(root), ["alice", "bob", "svc", "gone", "alice"])
    assert grants == [sudoers.Grant("alice", False), sudoers.Grant("bob", True)]


@requires_root
def test_a_planted_line_is_dropped_with_a_warning_naming_it(tmp_path, caplog):
    root = make_scratch_root(str(tmp_path / "r"), users=[("azureuser", 1000)])
    plant(root, f"{sudoers.HEADER}{PLANTED}\nazureuser ALL=(ALL) NOPASSWD:ALL\n", 0o666)
    with caplog.at_level(logging.WARNING):
        assert sudoers.own(Host(root), [sudoers.Grant("azureuser")]) is True
    assert dropin(root) == sudoers.HEADER + "azureuser ALL=(ALL) NOPASSWD:ALL\n"
    assert [r.getMessage() for r in caplog.records] == [
        f"{sudoers.DROPIN}: dropping {PLANTED!r}: azprov's drop-in holds only the admin users it provisioned"]
    info = os.stat(os.path.join(root, DROPIN))
    assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o440, 0, 0)
    assert subprocess.run(["visudo", "-c", "-f", os.path.join(root, DROPIN)], capture_output=True).returncode == 0


@requires_root
def test_a_symlink_at_the_drop_ins_name_is_replaced_not_followed(tmp_path, caplog):
    root = make_scratch_root(str(tmp_path / "r"), users=[("azureuser", 1000)])
    os.symlink("/etc/sudoers", os.path.join(root, DROPIN))
    before = open(os.path.join(root, "etc/sudoers")).read()
    host = Host(root)
    sudoers.check(host)  # a link azprov replaces: not refused
    assert sudoers.own(host, [sudoers.Grant("azureuser")]) is True
    assert not os.path.islink(os.path.join(root, DROPIN))
    assert sudoers.users(dropin(root)) == ["azureuser"]
    assert open(os.path.join(root, "etc/sudoers")).read() == before
    assert "is a symbolic link (to /etc/sudoers)" in caplog.text


@pytest.mark.parametrize("make", [os.mkdir, lambda path: os.mkfifo(path)])
def test_a_directory_or_fifo_at_the_drop_ins_name_is_refused_before_anything_changes(tmp_path, make):
    root = make_scratch_root(str(tmp_path / "r"))
    make(os.path.join(root, DROPIN))
    with pytest.raises(errors.UnsafePath):
        sudoers.check(Host(root))


def test_a_symlinked_sudoers_directory_is_refused(tmp_path):
    root = make_scratch_root(str(tmp_path / "r"))
    shutil.rmtree(os.path.join(root, "etc/sudoers.d"))
    os.symlink("/tmp", os.path.join(root, "etc/sudoers.d"))
    with pytest.raises(errors.UnsafePath, match="symbolic link"):
        sudoers.check(Host(root))


def test_a_drop_in_visudo_rejects_is_never_installed(tmp_path):
    root = make_scratch_root(str(tmp_path / "r"), users=[("azureuser", 1000)])
    plant(root, PLANTED + "\n")

    def visudo_says_no(argv):
        return CommandResult(tuple(argv), 1, "", "syntax error") if argv[0].endswith("visudo") else None

    host = Host(root, runner=FakeRunner(visudo_says_no))
    with pytest.raises(errors.StepFailed):
        sudoers.own(host, [sudoers.Grant("azureuser")])
    assert dropin(root) == PLANTED + "\n"  # untouched: the failure stops provisioning (no Ready)
    assert [f for f in os.listdir(os.path.join(root, "etc/sudoers.d")) if f.endswith(".azprov.tmp")] == []


def test_without_includedir_nothing_is_written(tmp_path, caplog):
    root = make_scratch_root(str(tmp_path / "r"))
    os.remove(os.path.join(root, "etc/sudoers"))
    open(os.path.join(root, "etc/sudoers"), "w").write("root ALL=(ALL) ALL\n")
    host = Host(root, runner=FakeRunner())
    assert sudoers.own(host, [sudoers.Grant("azureuser")]) is False
    assert not host.lexists(sudoers.DROPIN)
    assert "does not include /etc/sudoers.d" in caplog.text


def test_no_grants_remove_the_drop_in_whatever_it_holds(tmp_path, caplog):
    root = make_scratch_root(str(tmp_path / "r"))
    plant(root, PLANTED + "\n")
    assert sudoers.own(Host(root, runner=FakeRunner()), []) is True
    assert not os.path.lexists(os.path.join(root, DROPIN))
    assert repr(PLANTED) in caplog.text


@requires_root
def test_the_record_not_the_drop_in_says_who_gets_sudo(tmp_path):
    root = make_scratch_root(str(tmp_path / "r"), users=[("alice", 1000), ("eve", 1001)])
    plant(root, "eve ALL=(ALL) NOPASSWD:ALL\n")  # azprov's form, but eve is in no record
    host = Host(root)
    admins.remember(host, "alice")
    assert admins.grant_sudo(host) is True
    assert sudoers.users(dropin(root)) == ["alice"]
    assert admins.provisioned(host, None) == ["alice"]  # deprovision --user never removes eve


_LINES = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=60),
    st.sampled_from([PLANTED, "#includedir /tmp", "@include /home/eve/rules", "eve ALL=(ALL) NOPASSWD:ALL",
                     sudoers.HEADER.rstrip("\n"), "azureuser ALL=(ALL) NOPASSWD:ALL"]))
_NAMES = st.lists(st.from_regex(r"[a-z_][a-z0-9_-]{0,10}", fullmatch=True), max_size=4, unique=True)


@pytest.fixture(scope="module")
def scratch_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("sudoers"))


@fuzz(60)
@given(planted=st.lists(_LINES, max_size=8), names=_NAMES, asking=st.data())
def test_whatever_the_image_planted_the_drop_in_holds_exactly_the_grants(scratch_dir, planted, names, asking):
    root = make_scratch_root(tempfile.mkdtemp(dir=scratch_dir))
    plant(root, "\n".join(planted) + "\n")
    grants = [sudoers.Grant(name, asking.draw(st.booleans())) for name in names]
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("azprov.sudoers")
    logger.addHandler(handler)
    try:
        sudoers.own(Host(root, runner=FakeRunner()), grants)
    finally:
        logger.removeHandler(handler)
    wanted = sudoers.render(grants).decode()
    if grants:
        assert dropin(root) == wanted
    else:
        assert not os.path.lexists(os.path.join(root, DROPIN))
    kept = set(wanted.splitlines()) if grants else {sudoers.HEADER.rstrip("\n")}
    for line in planted:
        for part in line.splitlines() or [""]:
            if part.strip() and part not in kept:
                assert any(repr(part[:200]) in message for message in messages), (part, messages)


# --- the audit of the image's other rules (azprov check) ------------------------------------------

@pytest.mark.parametrize("text, what", [
    (PLANTED + "\n", "every account"),
    ("alice, ALL  ALL = (ALL) ALL\n", "every account"),
    ("!bob,ALL ALL=(root) /usr/bin/id\n", "every account"),
    ("User_Alias EVERYONE = alice, ALL\nEVERYONE ALL=(ALL) NOPASSWD: ALL\n", "every account"),
    ("ALL \\\n  ALL=(ALL) \\\n  NOPASSWD: ALL\n", "every account"),
    ("@includedir /tmp\n", "reads rules from /tmp"),
    ("#includedir /var/tmp/sudo/\n", "reads rules from /var/tmp/sudo"),
    ("#include /home/eve/rules\n", "reads rules from /home/eve/rules"),
    ('@include "/etc/sudoers.d/../../tmp/x"\n', "reads rules from"),
])
def test_the_audit_finds_rules_every_vm_would_share(tmp_path, text, what):
    root = make_scratch_root(str(tmp_path / "r"))
    plant(root, text) if "include" in text else open(os.path.join(root, "etc/sudoers.d/50-image"), "w").write(text)
    found = sudoers.audit(Host(root))
    assert len(found) == 1 and what in found[0].what, found


@pytest.mark.parametrize("name, text", [
    ("50-image", "%sudo ALL=(ALL:ALL) NOPASSWD: ALL\nroot ALL=(ALL:ALL) ALL\nDefaults env_keep += \"ALL\"\n"),
    ("50-image", "# ALL ALL=(ALL) NOPASSWD:ALL\n@includedir /etc/sudoers.d\n#include /etc/sudoers.d/x\n"),
    ("50-image", "Cmnd_Alias ALLCMDS = ALL\nHost_Alias EVERYWHERE = ALL\nalice ALL=(ALL) ALL\n"),
    ("50-image.bak", PLANTED + "\n"),  # sudo skips names with a dot
    ("50-image~", PLANTED + "\n"),  # and names ending in ~
])
def test_the_audit_leaves_ordinary_rules_and_files_sudo_skips(tmp_path, name, text):
    root = make_scratch_root(str(tmp_path / "r"))
    open(os.path.join(root, "etc/sudoers.d", name), "w").write(text)
    assert sudoers.audit(Host(root)) == []
