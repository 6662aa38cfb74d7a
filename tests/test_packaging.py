"""Packaging: the .deb and .rpm that ``make deb`` / ``make rpm`` build, the unit and the man page.

The packages are built once per module, by the same scripts the Makefile runs, into a temporary
output directory (``AZPROV_DIST``) so that a concurrent ``make deb`` is not disturbed.  Tests skip,
saying why, when a build or checking tool is not installed; ``.ci/apt-packages`` lists them all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "azprov.service"
EARLY_UNIT = ROOT / "systemd" / "azprov-hostname.service"
PRESET = ROOT / "systemd" / "80-azprov.preset"
MANPAGE = ROOT / "docs" / "azprov.8"
RPMLINT_CONFIG = ROOT / "packaging" / "rpm" / "rpmlint.toml"
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": os.environ.get("HOME", "/root"),
             "LC_ALL": "C.UTF-8"}

# Files azprov creates at run time; a purge of the .deb removes them.
RUNTIME_FILES = ["/etc/ssh/sshd_config.d/10-azprov.conf", "/etc/sudoers.d/90-azprov", "/var/lib/azprov"]


def run(*args: str, cwd: Path = ROOT, env: Dict[str, str] = None, check: bool = True):
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool, path=CLEAN_ENV["PATH"]) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (see .ci/apt-packages)")


def version() -> str:
    text = (ROOT / "azprov" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


def parse_unit(path: Path) -> Dict[str, List[str]]:
    """``Section.Key`` -> values, in order (enough for azprov's own unit)."""
    values: Dict[str, List[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return values


# ------------------------------------------------------------------------------------------------
# the built packages


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="module")
def deb(dist: Path) -> Path:
    need("dpkg-buildpackage", "dpkg-checkbuilddeps", "dh", "git")
    unmet = run("dpkg-checkbuilddeps", str(ROOT / "packaging/debian/control"),
                env=CLEAN_ENV, check=False)
    if unmet.returncode != 0:
        pytest.skip(f"build dependencies missing: {unmet.stderr.strip()}")
    run("bash", "packaging/build-deb.sh", env={**CLEAN_ENV, "AZPROV_DIST": str(dist)})
    path = dist / f"azprov_{version()}_all.deb"
    assert path.is_file(), sorted(p.name for p in dist.iterdir())
    return path


@pytest.fixture(scope="module")
def deb_control(deb: Path, tmp_path_factory) -> Path:
    control = tmp_path_factory.mktemp("deb-control")
    run("dpkg-deb", "-e", str(deb), str(control))
    return control


@pytest.fixture(scope="module")
def deb_tree(deb: Path, tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("deb-tree")
    run("dpkg-deb", "-x", str(deb), str(tree))
    return tree


@pytest.fixture(scope="module")
def rpm(dist: Path) -> Path:
    need("rpmbuild", "rpm", "git")
    run("bash", "packaging/build-rpm.sh", env={**CLEAN_ENV, "AZPROV_DIST": str(dist)})
    (path,) = dist.glob(f"azprov-{version()}-*.noarch.rpm")
    return path


def rpm_query(rpm: Path, *options: str) -> str:
    return run("rpm", "-qp", *options, str(rpm), env=CLEAN_ENV).stdout


# ------------------------------------------------------------------------------------------------
# .deb


def test_deb_depends_on_the_python_modules(deb: Path):
    fields = run("dpkg-deb", "-f", str(deb), "Package", "Architecture", "Depends").stdout
    assert "Package: azprov" in fields and "Architecture: all" in fields
    depends = {alt.split()[0] for dep in fields.split("Depends:", 1)[1].split(",")
               for alt in dep.split("|")}
    assert {"python3-requests", "python3-defusedxml", "python3-systemd"} <= depends, depends


def test_deb_configuration_is_a_conffile(deb_control: Path):
    assert "/etc/azprov/azprov.toml" in (deb_control / "conffiles").read_text().split()


def test_deb_enables_the_unit_but_never_starts_or_stops_it(deb_control: Path):
    postinst = (deb_control / "postinst").read_text()
    assert "deb-systemd-helper enable 'azprov.service'" in postinst
    assert "deb-systemd-helper enable 'azprov-firewall.service'" in postinst
    for script in ("preinst", "postinst", "prerm", "postrm"):
        path = deb_control / script
        if path.exists():
            text = path.read_text()
            assert "deb-systemd-invoke" not in text, f"{script} starts, restarts or stops azprov"
            assert not re.search(r"systemctl .*(start|restart|stop)", text), script


def test_deb_purge_removes_what_azprov_created(deb_control: Path):
    postrm = (deb_control / "postrm").read_text()
    purge = postrm.split('if [ "$1" = "purge" ]; then', 1)[1].split("\nfi\n", 1)[0]
    for path in RUNTIME_FILES:
        assert path in purge, path
    assert "deb-systemd-helper purge 'azprov.service'" in postrm


def test_deb_ships_code_unit_preset_config_and_man_page(deb: Path, deb_tree: Path):
    listing = run("dpkg-deb", "-c", str(deb)).stdout
    files = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    for path in ("/usr/bin/azprov", "/usr/share/man/man8/azprov.8.gz", "/etc/azprov/azprov.toml",
                 "/usr/lib/python3/dist-packages/azprov/cli.py",
                 "/usr/lib/python3/dist-packages/azprov/errors.py"):
        assert path in files, path
    units = [p for p in files if p.endswith("/systemd/system/azprov.service")]
    assert units, "the unit is not in the package"
    assert (deb_tree / units[0].lstrip("/")).read_text() == UNIT.read_text()
    early = [p for p in files if p.endswith("/systemd/system/azprov-hostname.service")]
    assert early and (deb_tree / early[0].lstrip("/")).read_text() == EARLY_UNIT.read_text()
    firewall = [p for p in files if p.endswith("/systemd/system/azprov-firewall.service")]
    assert firewall and (deb_tree / firewall[0].lstrip("/")).read_text() == \
        (ROOT / "systemd" / "azprov-firewall.service").read_text()
    assert any(p.endswith("/systemd/system-preset/80-azprov.preset") for p in files)
    assert not [p for p in files if "__pycache__" in p or p.startswith("/usr/local")]


def test_both_packages_ship_the_temp_disk_unit_and_the_udev_rules(deb: Path, deb_control: Path, rpm: Path):
    listing = run("dpkg-deb", "-c", str(deb)).stdout
    files = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    assert "/lib/systemd/system/azprov-temp-disk.service" in files
    assert "/lib/udev/rules.d/66-azprov-azure-disks.rules" in files
    assert "deb-systemd-helper enable 'azprov-temp-disk.service'" in (deb_control / "postinst").read_text()
    rpm_files = rpm_query(rpm, "--list").splitlines()
    assert "/usr/lib/systemd/system/azprov-temp-disk.service" in rpm_files
    assert "/usr/lib/udev/rules.d/66-azprov-azure-disks.rules" in rpm_files
    post = rpm_query(rpm, "--scripts").split("postinstall scriptlet", 1)[1].split("scriptlet", 1)[0]
    assert "azprov-temp-disk.service" in post


def test_temp_disk_unit_passes_verify_and_holds_nothing_back(tmp_path: Path):
    need("systemd-analyze", "man")
    source = ROOT / "systemd" / "azprov-temp-disk.service"
    unit = parse_unit(source)
    assert unit["Service.Type"] == ["oneshot"] and unit["Service.ExecStart"] == ["/usr/bin/azprov temp-disk"]
    assert 0 < float(unit["Service.TimeoutStartSec"][0]) <= 600
    before = " ".join(unit.get("Unit.Before", [])).split()
    assert not [name for name in before if name.endswith(".target")], before  # no target waits for it
    assert "!/etc/azprov/disabled" in unit["Unit.ConditionPathExists"]
    copy = tmp_path / "azprov-temp-disk.service"
    copy.write_text(source.read_text().replace("ExecStart=/usr/bin/azprov", f"ExecStart={shutil.which('true')}"))
    (tmp_path / "man" / "man8").mkdir(parents=True)
    shutil.copy(MANPAGE, tmp_path / "man" / "man8" / "azprov.8")
    result = run("systemd-analyze", "verify", str(copy),
                 env={**CLEAN_ENV, "MANPATH": str(tmp_path / "man")}, check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr)


def test_deb_command_runs_with_debians_python(deb_tree: Path):
    env = {**CLEAN_ENV, "PYTHONPATH": str(deb_tree / "usr/lib/python3/dist-packages")}
    script = deb_tree / "usr/bin/azprov"
    assert script.read_text().startswith("#!/usr/bin/python3\n")
    result = run("/usr/bin/python3", str(script), "--version", env=env)
    assert result.stdout.strip() == f"azprov {version()}"


def test_deb_has_no_lintian_errors(deb: Path):
    need("lintian")
    result = run("lintian", "--fail-on", "none", str(deb), env=CLEAN_ENV)
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert not errors, result.stdout


# ------------------------------------------------------------------------------------------------
# .rpm


def test_rpm_requires_without_python_abi_pin(rpm: Path):
    requires = rpm_query(rpm, "--requires").splitlines()
    assert "python3 >= 3.9" in requires
    assert "python3-requests" in requires and "python3-defusedxml" in requires
    assert any("python3-tomli" in r and "python3 >= 3.11" in r for r in requires), requires
    assert "/usr/bin/python3" in requires  # from the launcher's #! line
    assert not [r for r in requires if r.startswith("python(abi)")], requires
    assert "python3-systemd" in rpm_query(rpm, "--recommends").splitlines()
    assert rpm_query(rpm, "--queryformat", "%{ARCH}") == "noarch"


def test_rpm_scripts_preset_the_unit_but_never_start_it(rpm: Path):
    scripts = rpm_query(rpm, "--scripts")
    post = scripts.split("postinstall scriptlet", 1)[1].split("scriptlet", 1)[0]
    assert "preset azprov.service" in post or "install-system-units azprov.service" in post, post
    assert not re.search(r"\b(start|restart)\b", post), post
    assert "disable" in scripts.split("preuninstall scriptlet", 1)[1]


def test_rpm_byte_compiles_with_the_targets_python_and_cleans_up(rpm: Path):
    """No byte-code is shipped (the build host's python may not be the target's); %post writes
    it with the target's /usr/bin/python3, and an erase removes it again."""
    scripts = rpm_query(rpm, "--scripts")
    post = scripts.split("postinstall scriptlet", 1)[1].split("scriptlet", 1)[0]
    assert "/usr/bin/python3 -m compileall -q /usr/share/azprov/azprov" in post, post
    postun = scripts.split("postuninstall scriptlet", 1)[1].split("scriptlet", 1)[0]
    assert re.search(r'if \[ "\$1" -eq 0 \]; then\s+#[^\n]*\n\s+rm -rf /usr/share/azprov\n', postun), postun


def test_rpm_files(rpm: Path):
    files = rpm_query(rpm, "--list").splitlines()
    for path in ("/usr/bin/azprov", "/usr/share/azprov/azprov/cli.py",
                 "/usr/lib/systemd/system/azprov.service", "/usr/lib/systemd/system/azprov-hostname.service",
                 "/usr/lib/systemd/system/azprov-firewall.service",
                 "/usr/lib/systemd/system-preset/80-azprov.preset", "/etc/azprov/azprov.toml",
                 "/var/lib/azprov"):
        assert path in files, path
    assert [p for p in files if p.startswith("/usr/share/man/man8/azprov.8")]
    assert not [p for p in files if p.startswith("/usr/lib/python") or "__pycache__" in p]
    assert rpm_query(rpm, "--configfiles").split() == ["/etc/azprov/azprov.toml"]


def test_rpm_launcher_runs_the_private_copy(rpm: Path, tmp_path: Path):
    need("rpm2cpio", "cpio")
    extract = subprocess.run(f"rpm2cpio '{rpm}' | cpio -idm --quiet", shell=True, cwd=tmp_path,
                             env=CLEAN_ENV, capture_output=True, text=True)
    assert extract.returncode == 0, extract.stderr
    launcher = (tmp_path / "usr/bin/azprov").read_text()
    assert launcher.startswith("#!/usr/bin/python3 -s\n")
    assert '"/usr/share/azprov"' in launcher
    relocated = tmp_path / "azprov-launcher"
    relocated.write_text(launcher.replace('"/usr/share/azprov"', repr(str(tmp_path / "usr/share/azprov"))))
    result = run("/usr/bin/python3", "-s", str(relocated), "--version", env=CLEAN_ENV)
    assert result.stdout.strip() == f"azprov {version()}"


def test_rpm_has_no_rpmlint_errors(rpm: Path):
    need("rpmlint")
    result = run("rpmlint", "-c", str(RPMLINT_CONFIG), str(rpm), env=CLEAN_ENV, check=False)
    errors = [line for line in result.stdout.splitlines() if ": E: " in line]
    assert not errors, result.stdout


# ------------------------------------------------------------------------------------------------
# the unit, the preset and the man page


@pytest.mark.parametrize("unit,command", [(UNIT, "provision"), (EARLY_UNIT, "early-hostname")])
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, unit: Path, command: str):
    need("systemd-analyze", "man")
    # verify wants ExecStart= to exist and the Documentation= man page to be installed: point
    # it at an existing executable and at this tree's man page.  Both units side by side, so
    # that azprov.service's Wants=azprov-hostname.service finds it.
    copies = {}
    for source in (UNIT, EARLY_UNIT):
        copies[source] = tmp_path / source.name
        copies[source].write_text(source.read_text().replace("ExecStart=/usr/bin/azprov",
                                                             f"ExecStart={shutil.which('true')}"))
    assert f"ExecStart=/usr/bin/azprov {command}\n" in unit.read_text()
    (tmp_path / "man" / "man8").mkdir(parents=True)
    shutil.copy(MANPAGE, tmp_path / "man" / "man8" / "azprov.8")
    result = run("systemd-analyze", "verify", str(copies[unit]), cwd=tmp_path,
                 env={**CLEAN_ENV, "MANPATH": str(tmp_path / "man"),
                      "SYSTEMD_UNIT_PATH": f"{tmp_path}:"}, check=False)
    # verify exits 0 on unknown keys and only complains: any output is a failure
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr)


def test_unit_settings():
    unit = parse_unit(UNIT)
    assert unit["Service.Type"] == ["notify"] and unit["Service.NotifyAccess"] == ["main"]
    assert unit["Service.ExecStart"] == ["/usr/bin/azprov provision"]
    assert float(unit["Service.TimeoutStartSec"][0]) > 1200 + 300
    assert unit["Service.StateDirectory"] == ["azprov"]
    assert unit["Service.StateDirectoryMode"] == ["0700"]
    after = " ".join(unit["Unit.After"]).split()
    before = " ".join(unit["Unit.Before"]).split()
    assert "network-online.target" in after and "network-online.target" in " ".join(unit["Unit.Wants"])
    for name in ("ssh.service", "sshd.service", "sshd-keygen.service", "systemd-user-sessions.service"):
        assert name in before, name
    # sockets come before basic.target: Before=ssh.socket would be an ordering cycle
    assert "ssh.socket" not in before
    assert "!/etc/azprov/disabled" in unit["Unit.ConditionPathExists"]
    assert "!azprov=disabled" in unit["Unit.ConditionKernelCommandLine"]
    # hardening must not block the steps: hostname change, keys in /home, useradd's SELinux
    # domain transition, writes to /etc
    for forbidden in ("ProtectHostname", "ProtectHome", "NoNewPrivileges", "PrivateNetwork",
                      "PrivateUsers", "DynamicUser", "ReadOnlyPaths"):
        assert f"Service.{forbidden}" not in unit, forbidden
    assert unit["Service.ProtectSystem"] == ["true"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_early_unit_runs_before_the_network_only_with_azprov():
    """azprov-hostname.service: pulled in by azprov.service (no [Install]: it runs exactly while
    azprov is enabled), before network-pre.target and the network stacks, with the same kill
    switches; a oneshot that needs no D-Bus (DefaultDependencies=no)."""
    unit = parse_unit(EARLY_UNIT)
    main = parse_unit(UNIT)
    assert "azprov-hostname.service" in " ".join(main["Unit.Wants"]).split()
    assert "azprov-hostname.service" in " ".join(main["Unit.After"]).split()
    assert not [key for key in unit if key.startswith("Install.")]
    assert unit["Unit.DefaultDependencies"] == ["no"]
    before = " ".join(unit["Unit.Before"]).split()
    for name in ("network-pre.target", "systemd-networkd.service", "networking.service", "NetworkManager.service",
                 "dhcpcd.service"):
        assert name in before, name
    assert "network-pre.target" in " ".join(unit["Unit.Wants"]).split()
    after = " ".join(unit.get("Unit.After", [])).split()
    assert not {"dbus.service", "dbus.socket", "network.target", "basic.target"} & set(after), after
    assert unit["Unit.ConditionPathExists"] == main["Unit.ConditionPathExists"]
    assert unit["Unit.ConditionKernelCommandLine"] == main["Unit.ConditionKernelCommandLine"]
    assert unit["Unit.ConditionPathExistsGlob"] == ["/dev/sr*"]  # no CD-ROM drive, no disc
    assert unit["Service.Type"] == ["oneshot"]
    assert unit["Service.ExecStart"] == ["/usr/bin/azprov early-hostname"]


def test_preset_enables_the_unit():
    lines = [l for l in PRESET.read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines == ["enable azprov.service", "enable azprov-firewall.service", "enable azprov-temp-disk.service"]


def test_man_page_renders_without_warnings():
    need("man")
    result = run("man", "--warnings", "-l", str(MANPAGE), env={**CLEAN_ENV, "MANWIDTH": "80"})
    assert not result.stderr.strip(), result.stderr
    assert "azprov provision" in result.stdout


def test_man_page_documents_every_command_key_and_exit_code():
    from azprov import config
    from azprov.cli import COMMANDS
    from azprov.errors import ExitCode

    text = MANPAGE.read_text().replace("\\-", "-")
    for command in COMMANDS:
        assert re.search(rf'^\.BI? "?{re.escape(command)}\b', text, re.M), command
    for section, keys in config.Config().to_dict().items():
        assert f".SS [{section}]" in text, section
        for key in keys:
            assert re.search(rf"^\.B {key}$", text, re.M), f"{section}.{key}"
    for code in ExitCode:
        assert re.search(rf"^\.B {int(code)}$", text, re.M), code
