"""``azprov check``: the pre-capture gate, on real image trees.

Every tree here is a scratch image (tests/support/scratch_root.py) with a real interpreter
(``install_python``), generalized by the real ``azprov deprovision``: that image passes.  Each
failure case breaks it in one way and runs the real CLI on it: exit 10, the problem named, with
its fix.  The guide's path (provision, deprovision, deprovision --user, check) runs over real
HTTP against the fabric emulator with the real useradd.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from support import cli
from support.scratch_root import install_python, make_scratch_root

pytestmark = cli.requires_root  # chroot into the tree; azprov's state is root-only

NOT_READY = 10


def write(root: str, path: str, text: str, mode: int = 0o644) -> None:
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as handle:
        handle.write(text)
    os.chmod(full, mode)


def check(root: str):
    """check's verdict, and status's, which must agree: status describes what check decides."""
    result = cli.azprov("check", "--root", root, "--json")
    assert result.returncode in (0, NOT_READY), result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ready_for_capture"] == (result.returncode == 0)
    for problem in report["problems"]:
        assert problem["problem"] and problem["fix"], problem
    if result.returncode:  # the failure fields every command's --json failure carries
        assert (report["reason"], report["exit_code"]) == ("not_ready_for_capture", NOT_READY)
        assert f"{len(report['problems'])} problem" in report["error"]
    else:
        assert "error" not in report
    status = cli.azprov("status", "--root", root, "--json")
    assert status.returncode == 0, status.stderr
    described = json.loads(status.stdout)
    assert described["ready_for_capture"] == report["ready_for_capture"]
    assert described["capture_problems"] == report["problems"]
    return result.returncode, report["problems"]


@pytest.fixture
def image(tmp_path) -> str:
    """A generalized image tree that passes every check."""
    root = install_python(make_scratch_root(str(tmp_path / "image")))
    done = cli.azprov("deprovision", "--force", "--root", root)
    assert done.returncode == 0, done.stderr
    return root


def test_a_generalized_image_passes(image):
    assert check(image) == (0, [])
    text = cli.azprov("check", "--root", image)
    assert text.returncode == 0 and "ready for capture: yes" in text.stdout
    assert "temporary disk: owner " in text.stdout  # who formats it, also when all is well


def test_problems_are_listed_with_their_fix_and_exit_10(image):
    write(image, "/etc/azprov/disabled", "")
    write(image, "/etc/ssh/ssh_host_ed25519_key", "key", 0o600)
    result = cli.azprov("check", "--root", image)
    assert result.returncode == NOT_READY, result.stdout + result.stderr
    assert result.stdout.count("problem: ") == 2 and result.stdout.count("    fix: ") == 2
    assert "sudo rm /etc/azprov/disabled" in result.stdout
    assert "ready for capture: no (2 problems" in result.stdout
    status = cli.azprov("status", "--root", image)  # describes the same two, exits 0
    assert status.returncode == 0, status.stderr
    assert "ready for capture: no (2 problems; `azprov check` is the gate)" in status.stdout
    assert status.stdout.count("warning: ") == 2 and "sudo rm /etc/azprov/disabled" in status.stdout


def test_a_real_host_name_is_a_warning_and_deprovision_clears_it(image):
    """The build VM's name left in /etc/hostname does not keep an image from provisioning (the
    disc's name is set before the network), so check passes, but says it."""
    write(image, "/etc/hostname", "build-vm-7\n")
    assert check(image) == (0, [])
    report = json.loads(cli.azprov("check", "--root", image, "--json").stdout)
    assert [(w["check"], w["warning"]) for w in report["warnings"]] == [("hostname", True)]
    assert "build-vm-7" in report["warnings"][0]["problem"]
    assert report["warnings"][0]["fix"] == "sudo azprov deprovision --force"
    text = cli.azprov("check", "--root", image)
    assert text.returncode == 0 and "ready for capture: yes" in text.stdout
    assert "warning: /etc/hostname still names this machine (build-vm-7)" in text.stdout
    assert "problem: " not in text.stdout
    done = cli.azprov("deprovision", "--force", "--root", image)
    assert done.returncode == 0 and "reset the host name build-vm-7" in done.stdout
    assert json.loads(cli.azprov("check", "--root", image, "--json").stdout)["warnings"] == []


def _disable(root):
    os.remove(os.path.join(root, "etc/systemd/system/multi-user.target.wants/azprov.service"))


def _uninstall(root):
    _disable(root)
    os.remove(os.path.join(root, "usr/lib/systemd/system/azprov.service"))


def _mask(root):
    os.symlink("/dev/null", os.path.join(root, "etc/systemd/system/azprov.service"))


def _waagent(conf):
    def apply(root):
        write(root, "/usr/sbin/waagent", "#!/bin/false\n", 0o755)
        write(root, "/usr/lib/systemd/system/walinuxagent.service", "[Service]\nExecStart=/usr/sbin/waagent -daemon\n")
        os.symlink("/usr/lib/systemd/system/walinuxagent.service",
                   os.path.join(root, "etc/systemd/system/multi-user.target.wants/walinuxagent.service"))
        write(root, "/etc/waagent.conf", conf)
    return apply


def _cloud_init(cfg, disabled=False):
    def apply(root):
        write(root, "/usr/bin/cloud-init", "#!/bin/false\n", 0o755)
        write(root, "/etc/cloud/cloud.cfg", cfg)
        if disabled:
            write(root, "/etc/cloud/cloud-init.disabled", "")
    return apply


def _file(path, text, mode=0o644):
    return lambda root: write(root, path, text, mode)


def _state(root):
    write(root, "/var/lib/azprov/state.json", json.dumps({
        "vm_id": "0f3c2b1a-9e8d-4c7b-a6f5-e4d3c2b1a098", "incarnation": 1, "container_id": "c",
        "instance_id": "i", "ready_at": "2024-01-01T00:00:00+00:00"}), 0o600)


def _remembered_keys(root):
    """The account is gone, its home and keys are not, and the record still names it."""
    write(root, "/home/bob/.ssh/authorized_keys", "ssh-ed25519 AAAA bob\n", 0o600)
    write(root, "/var/lib/azprov/admin-users", "bob\n", 0o600)


def _remembered_sudo(root):
    """The record names bob, whose sudo line is still in azprov's drop-in (account gone)."""
    write(root, "/etc/sudoers.d/90-azprov", "bob ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    write(root, "/var/lib/azprov/admin-users", "bob\n", 0o600)


def _shadow(name, field):
    def breaks(root):
        path = os.path.join(root, "etc/shadow")
        lines = [f"{name}:{field}:19500:0:99999:7:::" if line.startswith(name + ":") else line
                 for line in open(path).read().splitlines()]
        open(path, "w").write("\n".join(lines) + "\n")
    return breaks


def _sudo_member_with_keys(root):
    """The image build's own user, left in group sudo with its SSH key."""
    for path, line in (("etc/passwd", "builder:x:1100:1100::/home/builder:/bin/bash"),
                       ("etc/shadow", "builder:!:19500:0:99999:7:::"), ("etc/group", "builder:x:1100:")):
        with open(os.path.join(root, path), "a") as handle:
            handle.write(line + "\n")
    _replace_group(root, "sudo:x:27:", "sudo:x:27:builder")
    write(root, "/home/builder/.ssh/authorized_keys", "ssh-ed25519 AAAA builder\n", 0o600)


def _replace_group(root, old, new):
    path = os.path.join(root, "etc/group")
    text = open(path).read()
    assert old + "\n" in text
    open(path, "w").write(text.replace(old + "\n", new + "\n"))


def _dbus_link(root):
    os.makedirs(os.path.join(root, "var/lib/dbus"), exist_ok=True)
    os.symlink("/etc/machine-id", os.path.join(root, "var/lib/dbus/machine-id"))


def _remove(path):
    return lambda root: os.remove(os.path.join(root, path.lstrip("/")))


def _no_package(name):
    def apply(root):
        import shutil

        shutil.rmtree(os.path.join(root, "usr/lib/python3/dist-packages", name))
    return apply


def _exec_start(program):
    return _file("/etc/systemd/system/azprov.service.d/override.conf",
                 f"[Service]\nExecStart=\nExecStart={program} provision\n")


NETPLAN_PINNED = """\
network:
  version: 2
  ethernets:
    eth0:
      dhcp4: true
      match:
        macaddress: 00:0d:3a:12:34:56
      set-name: eth0
"""
NM_PINNED = """\
[connection]
id=cloud-init eth0
type=ethernet

[ethernet]
mac-address=00:0D:3A:12:34:56

[ipv4]
method=auto
"""

CLOUD_INIT_FSTAB = ("/dev/disk/cloud/azure_resource-part1\t/mnt\tauto\tdefaults,nofail,"
                    "x-systemd.after=cloud-init.service,_netdev,comment=cloudconfig\t0\t2\n")


def _temp_disk_unit(root):
    os.symlink("/usr/lib/systemd/system/azprov-temp-disk.service",
               os.path.join(root, "etc/systemd/system/multi-user.target.wants/azprov-temp-disk.service"))


def _two_disk_owners(root):
    _temp_disk_unit(root)
    _waagent("Provisioning.Agent=disabled\nResourceDisk.Format=y\n")(root)


FAILURES = {
    "unit disabled": (_disable, "unit", "azprov deprovision"),
    "unit not installed": (_uninstall, "unit", "install the azprov package"),
    "unit masked": (_mask, "unit", "systemctl unmask"),
    "kill switch file": (_file("/etc/azprov/disabled", ""), "kill_switch", "rm /etc/azprov/disabled"),
    "kill switch in grub": (_file("/etc/default/grub", 'GRUB_CMDLINE_LINUX="console=ttyS0 azprov=disabled"\n'),
                            "kill_switch", "/etc/default/grub"),
    "kill switch in BLS entry": (_file("/boot/loader/entries/x.conf", "options root=/dev/sda1 azprov=disabled\n"),
                                 "kill_switch", "/boot/loader/entries/x.conf"),
    "walinuxagent provisions": (_waagent("Provisioning.Agent=auto\n"), "other_provisioner", "Provisioning.Agent=disabled"),
    "walinuxagent default conf": (_waagent(""), "other_provisioner", "purge waagent"),
    "walinuxagent as Debian ships it": (_waagent("Provisioning.Agent=cloud-init\n"), "other_provisioner",
                                        "Provisioning.Agent=disabled"),
    "walinuxagent with legacy Enabled=n": (_waagent("Provisioning.Enabled=n\n"), "other_provisioner",
                                           "Provisioning.Enabled is ignored"),
    "walinuxagent's ovf-env.xml": (_file("/var/lib/waagent/ovf-env.xml", "<Environment/>"), "agent_state",
                                   "secrets: ovf-env.xml"),
    "an extension the build VM ran": (_file("/var/lib/waagent/Microsoft.OSTCExtensions.VMAccessForLinux-1.5.1/"
                                            "config/0.settings", "{}"), "agent_state",
                                      "extension directories: Microsoft.OSTCExtensions.VMAccessForLinux-1.5.1"),
    "cloud-init's instance": (_file("/var/lib/cloud/instances/x/user-data.txt", ""), "agent_state",
                              "/var/lib/cloud/instances"),
    "cloud-init with azure": (_cloud_init("datasource_list: [ Azure, None ]\n"), "other_provisioner", "cloud-init"),
    "cloud-init every datasource": (_cloud_init("users: [default]\n"), "other_provisioner", "cloud-init"),
    "configuration does not load": (_file("/etc/azprov/azprov.toml", "[wireserver]\nadress = '1.2.3.4'\n"),
                                    "config", "azprov config"),
    "configuration drop-in does not load": (_file("/etc/azprov/azprov.toml.d/10-x.toml", "[http]\njitter = 'yes'\n"),
                                            "config", "azprov config"),
    "ssh host keys": (_file("/etc/ssh/ssh_host_rsa_key.pub", "ssh-rsa AAAA"), "host_keys", "deprovision"),
    "machine-id": (_file("/etc/machine-id", "0123456789abcdef0123456789abcdef\n"), "machine_id", "deprovision"),
    "dbus machine-id copy": (_file("/var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n"),
                             "machine_id", "deprovision"),
    "dhclient lease": (_file("/var/lib/dhcp/dhclient.eth0.leases", "lease {}\n"), "leases", "deprovision"),
    "networkd lease": (_file("/run/systemd/netif/leases/2", "ADDRESS=10.0.0.4\n"), "leases", "deprovision"),
    "NetworkManager internal lease": (_file("/var/lib/NetworkManager/internal-0b5d-eth0.lease", "ADDRESS=10.0.0.4\n"),
                                      "leases", "deprovision"),
    "azprov state": (_state, "state", "deprovision"),
    "admin user left in sudoers": (_remembered_sudo, "admin_user", "deprovision --user"),
    "root password": (_shadow("root", "$6$salt$hash"), "root", "usermod -L root"),
    "root empty password": (_shadow("root", ""), "root", "usermod -L root"),
    "root ssh keys": (_file("/root/.ssh/authorized_keys", "ssh-ed25519 AAAA builder\n", 0o600), "root", "rm /root/.ssh"),
    "root ssh keys with options": (_file("/root/.ssh/authorized_keys2", 'from="10.0.0.0/8" ssh-ed25519 AAAA b\n', 0o600),
                                   "root", "rm /root/.ssh"),
    "an account with an empty password": (_shadow("daemon", ""), "passwords", "usermod -L daemon"),
    "sudo rule for every account": (_file("/etc/sudoers.d/50-image", "ALL ALL=(ALL) NOPASSWD:ALL\n", 0o440),
                                    "sudo", "visudo -f /etc/sudoers.d/50-image"),
    "planted line in azprov's drop-in": (_file("/etc/sudoers.d/90-azprov", "ALL ALL=(ALL) NOPASSWD:ALL\n", 0o440),
                                         "sudo", "visudo -f /etc/sudoers.d/90-azprov"),
    "sudo rules read from /tmp": (_file("/etc/sudoers.d/50-image", "@includedir /tmp\n", 0o440), "sudo", "visudo"),
    "sudo group member with keys": (_sudo_member_with_keys, "sudo", "gpasswd -d builder sudo"),
    "admin user's keys left": (_remembered_keys, "admin_user", "deprovision --user"),
    "netplan pinned to a MAC": (_file("/etc/netplan/50-cloud-init.yaml", NETPLAN_PINNED), "network", "hv_netvsc"),
    "networkd pinned to a MAC": (_file("/etc/systemd/network/10-eth0.network", "[Match]\nMACAddress=00:0d:3a:12:34:56\n[Network]\nDHCP=yes\n"),
                                 "network", "Driver=hv_netvsc"),
    "networkd link pinned to a MAC": (_file("/etc/systemd/network/10-eth0.link", "[Match]\nPermanentMACAddress=00:0d:3a:12:34:56\n[Link]\nName=eth0\n"),
                                      "network", "Driver=hv_netvsc"),
    "NetworkManager keyfile pinned to a MAC": (_file("/etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection", NM_PINNED, 0o600),
                                               "network", "keyfile"),
    "ifcfg pinned to a MAC": (_file("/etc/sysconfig/network-scripts/ifcfg-eth0", 'DEVICE=eth0\nHWADDR="00:0D:3A:12:34:56"\nBOOTPROTO=dhcp\n'),
                              "network", "HWADDR"),
    "ifupdown pinned to a MAC": (_file("/etc/network/interfaces.d/eth0", "iface eth0 inet dhcp\n  hwaddress ether 00:0d:3a:12:34:56\n"),
                                 "network", "hwaddress"),
    "udev names pinned to MACs": (_file("/etc/udev/rules.d/70-persistent-net.rules",
                                        'SUBSYSTEM=="net", ATTR{address}=="00:0d:3a:12:34:56", NAME="eth0"\n'),
                                  "network", "rule"),
    "cloud-init's temporary disk line in fstab": (_file("/etc/fstab", CLOUD_INIT_FSTAB), "temp_disk", "deprovision"),
    "a data disk mounted without nofail": (_file("/etc/fstab", "/dev/disk/azure/scsi1/lun0-part1 /data xfs defaults 0 2\n"),
                                           "temp_disk", "nofail"),
    "WALinuxAgent and azprov both format the temporary disk": (_two_disk_owners, "temp_disk", "ResourceDisk.Format=n"),
    "no interpreter in the image": (_remove("/usr/bin/python3"), "python", "python3-requests"),
    "a dependency missing": (_no_package("defusedxml"), "python", "python3-defusedxml"),
    "requests missing": (_no_package("requests"), "python", "python3-requests"),
    "ExecStart names a missing program": (_exec_start("/opt/azprov/bin/azprov"), "python", "ExecStart"),
}

@pytest.mark.parametrize("name", sorted(FAILURES))
def test_each_reason_fails_the_image(image, name):
    breaks, kind, fix = FAILURES[name]
    breaks(image)
    code, problems = check(image)
    assert code == NOT_READY, problems
    assert [p["check"] for p in problems] == [kind], problems
    assert fix in problems[0]["fix"] or fix in problems[0]["problem"], problems


ACCEPTED = {
    "walinuxagent for extensions only": _waagent("Provisioning.Agent=disabled\nExtensions.Enabled=y\n"),
    "cloud-init without azure": _cloud_init("datasource_list: [ NoCloud, None ]\n"),
    "cloud-init disabled": _cloud_init("datasource_list: [ Azure ]\n", disabled=True),
    "netplan matching the driver": _file("/etc/netplan/90-azure-dhcp.yaml",
                                         "network:\n  version: 2\n  ethernets:\n    azure:\n      match:\n"
                                         "        driver: hv_netvsc\n      dhcp4: true\n"),
    "networkd setting (not matching) a MAC": _file("/etc/systemd/network/10-x.link",
                                                   "[Match]\nDriver=hv_netvsc\n[Link]\nMACAddressPolicy=persistent\n"),
    "NetworkManager cloned MAC only": _file("/etc/NetworkManager/system-connections/x.nmconnection",
                                            "[ethernet]\ncloned-mac-address=stable\n# mac-address=00:0d:3a:12:34:56\n", 0o600),
    "kill switch commented out in grub": _file("/etc/default/grub", 'GRUB_CMDLINE_LINUX="console=ttyS0"\n# azprov=disabled\n'),
    "a valid configuration": _file("/etc/azprov/azprov.toml", "[wireserver]\ndeadline = 600\n"),
    "a removed user's stale record": _file("/var/lib/azprov/admin-users", "gone\n", 0o600),
    "dbus machine-id linked to /etc": _dbus_link,
    "a data disk mounted with nofail": _file("/etc/fstab", "UUID=1234 / ext4 defaults 0 1\n"
                                             "/dev/disk/azure/scsi1/lun0-part1 /data xfs defaults,nofail 0 2\n"),
    "WALinuxAgent alone formats the temporary disk": _waagent("Provisioning.Agent=disabled\nResourceDisk.Format=y\n"),
    "azprov alone formats the temporary disk": _temp_disk_unit,
}


def test_check_says_who_owns_the_temporary_disk(image):
    owner = lambda: json.loads(cli.azprov("check", "--root", image, "--json").stdout)["temp_disk_owner"]
    assert owner()["owner"] == "none"  # the scratch image does not enable azprov-temp-disk.service
    _temp_disk_unit(image)
    assert owner()["owner"] == "azprov"
    _waagent("Provisioning.Agent=disabled\nResourceDisk.Format=y\n")(image)
    assert owner()["owner"] == "conflict" and "ResourceDisk.Format=y" in owner()["why"]


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_what_provisions_fine_passes(image, name):
    ACCEPTED[name](image)
    assert check(image) == (0, [])


FIREWALL_UNIT = "usr/lib/systemd/system/azprov-firewall.service"


def _firewall_installed(root):
    """The package's azprov-firewall.service in the tree, not enabled."""
    write(root, FIREWALL_UNIT, open(os.path.join(cli.REPO, "systemd", "azprov-firewall.service")).read())


def _firewall_enabled(root):
    """Installed and enabled as the package's preset leaves it (WantedBy=sysinit.target)."""
    _firewall_installed(root)
    wants = os.path.join(root, "etc/systemd/system/sysinit.target.wants")
    os.makedirs(wants, exist_ok=True)
    os.symlink("/" + FIREWALL_UNIT, os.path.join(wants, "azprov-firewall.service"))


def _copy_tool(source, dest, mode=0o755):
    def apply(root):
        full = os.path.join(root, dest.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        shutil.copyfile(source, full)
        os.chmod(full, mode)
    return apply


def _iptables_alternatives(root):
    """Debian's layout: /usr/sbin/iptables -> /etc/alternatives/iptables -> /usr/sbin/iptables-nft
    -> xtables-nft-multi (this machine's binary)."""
    _copy_tool(shutil.which("xtables-nft-multi", path="/usr/sbin:/sbin"), "/usr/sbin/xtables-nft-multi")(root)
    os.symlink("xtables-nft-multi", os.path.join(root, "usr/sbin/iptables-nft"))
    _iptables_alternatives_link(root)
    os.symlink("/usr/sbin/iptables-nft", os.path.join(root, "etc/alternatives/iptables"))


def _iptables_alternatives_link(root):
    """Only /usr/sbin/iptables -> /etc/alternatives/iptables: dangling in the image (this
    machine has /etc/alternatives/iptables; the image's lookup must not see it)."""
    os.makedirs(os.path.join(root, "etc/alternatives"), exist_ok=True)
    os.symlink("/etc/alternatives/iptables", os.path.join(root, "usr/sbin/iptables"))


def _firewall_masked(root):
    os.symlink("/dev/null", os.path.join(root, "etc/systemd/system/azprov-firewall.service"))


NFT = "/usr/sbin/nft"
ON = _firewall_enabled
# The changes made to the generalized image: each row but one enables the unit.
FIREWALL_WARNS = {
    "no nft, no iptables": [ON],
    "nft in /usr/local/sbin only (not where azprov firewall looks)": [ON, _copy_tool(NFT, "/usr/local/sbin/nft")],
    "nft not executable": [ON, _copy_tool(NFT, "/usr/sbin/nft", 0o644)],
    "iptables a link to an alternative the image lacks": [ON, _iptables_alternatives_link],
}
FIREWALL_QUIET = {
    "nft installed": [ON, _copy_tool(NFT, "/usr/sbin/nft")],
    "iptables through Debian's alternatives links": [ON, _iptables_alternatives],
    "the unit installed, not enabled": [_firewall_installed],
    "the unit masked": [ON, _firewall_masked],
    "root_only = false": [ON, _file("/etc/azprov/azprov.toml", "[wireserver]\nroot_only = false\n")],
    "WALinuxAgent sets its own rule": [ON, _waagent("Provisioning.Agent=disabled\nOS.EnableFirewall=y\n")],
}


@pytest.mark.parametrize("name", sorted(FIREWALL_WARNS) + sorted(FIREWALL_QUIET))
def test_an_enabled_firewall_unit_without_nft_or_iptables_is_a_warning(image, name):
    """azprov firewall exits 0 with a warning when it finds no tool (VMs provision), so check
    warns without failing, and only when the unit would run and want a rule."""
    for change in FIREWALL_WARNS.get(name) or FIREWALL_QUIET[name]:
        change(image)
    assert check(image) == (0, [])
    warnings = json.loads(cli.azprov("check", "--root", image, "--json").stdout)["warnings"]
    if name in FIREWALL_QUIET:
        assert warnings == [], warnings
        return
    assert [(w["check"], w["warning"]) for w in warnings] == [("firewall", True)], warnings
    assert "azprov-firewall.service is enabled but the image has neither nft nor iptables" in warnings[0]["problem"]
    assert warnings[0]["fix"].startswith("install nftables or iptables")
    assert "systemctl disable azprov-firewall.service" in warnings[0]["fix"]
    text = cli.azprov("check", "--root", image)
    assert text.returncode == 0 and "ready for capture: yes" in text.stdout, text.stdout + text.stderr
    assert "warning: azprov-firewall.service is enabled" in text.stdout
    assert "    fix: install nftables or iptables" in text.stdout


@pytest.mark.emulator
def test_the_guide_path_provision_deprovision_check(tmp_path, emulator):
    """A build VM made from an azprov image: provisioned (real useradd), then generalized.  A plain
    deprovision keeps the record of the admin user; check fails on it until --user removes it."""
    root = install_python(make_scratch_root(str(tmp_path / "image")))
    fabric = emulator({"admin_username": "builder"})
    result = cli.provision(root, fabric)
    assert result.returncode == 0, result.stderr

    code, problems = check(root)
    assert code == NOT_READY
    assert {p["check"] for p in problems} >= {"unit", "state", "host_keys", "admin_user"}, problems
    warnings = json.loads(cli.azprov("check", "--root", root, "--json").stdout)["warnings"]
    assert [w["check"] for w in warnings] == ["hostname"]  # the provisioned VM's own name

    plain = cli.azprov("deprovision", "--force", "--root", root)
    assert plain.returncode == 0, plain.stderr
    assert "keep the record of the admin user builder" in plain.stdout
    code, problems = check(root)
    assert code == NOT_READY and [p["check"] for p in problems] == ["admin_user"], problems
    assert "builder" in problems[0]["problem"] and "--user" in problems[0]["fix"]

    # the state is gone, yet --user still finds the user azprov created
    assert not os.path.exists(os.path.join(root, "var/lib/azprov/state.json"))
    removed = cli.azprov("deprovision", "--user", "--force", "--root", root)
    assert removed.returncode == 0, removed.stderr
    assert "remove the admin user builder" in removed.stdout
    assert "builder:" not in open(os.path.join(root, "etc/passwd")).read()
    assert not os.path.exists(os.path.join(root, "home/builder"))
    assert not os.path.exists(os.path.join(root, "etc/sudoers.d/90-azprov"))
    assert check(root) == (0, [])


def test_check_is_not_a_usage_error_and_changes_nothing(image):
    from support.scratch_root import snapshot

    write(image, "/etc/azprov/disabled", "")
    before = snapshot(image)
    assert cli.azprov("check", "--root", image).returncode == NOT_READY != 2
    assert snapshot(image) == before
