"""Boot test: the VM's name reaches a real DHCP server, never the image's (issue 20).

The image's own DHCP client configures its ``eth0``, one end of a veth pair whose other end is the
fabric namespace: dnsmasq answers there (a lease, the gateway, option 245 like Azure's DHCP) and
logs with ``--log-dhcp`` the host name every DHCP message carried (``client provides name``), and
the fabric emulator answers at 168.63.129.16 and 169.254.169.254, reached through the gateway as
on Azure (tests/boot/dhcp.py).  Everything is read from outside: dnsmasq's log, time-stamped on
the CLOCK_MONOTONIC the container shares, against the moment systemd started azprov.service.

- systemd-networkd (Debian 12's systemd 252): an image that still carries the build VM's name,
  booted with the provisioning disc (the name comes before the network, from the disc: every
  message carries the VM's name, the first one included, and azprov does not ask networkd again);
  and an image generalized by ``azprov deprovision`` (``localhost``: networkd sends no name),
  booted with IMDS alone (azprov names the VM after the network came up, and
  ``networkctl reconfigure`` makes networkd send the new name: the first message after azprov
  started carries it).
- ifupdown with ISC dhclient (Debian's ``ifupdown`` and ``isc-dhcp-client``, installed in the
  image from the same archive): with the disc, every message carries the VM's name; generalized,
  IMDS alone, dhclient is released and restarted with its own options.
- dhcpcd (Debian's ``dhcpcd``, with ``hostname`` in its configuration, which Debian's lacks):
  with the disc, every message carries the VM's name; generalized, IMDS alone,
  ``dhcpcd --rebind eth0`` sends it.  NetworkManager is not booted here: in a container without udev it would need
  more set-up than it shares with a VM (docs/testing-boot.md).

In no case does any message carry the build VM's name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import pytest

from tests.boot import dhcp
from tests.boot import image as images
from tests.boot import nspawn
from tests.boot.fabric import Emulator
from tests.boot.disc import provisioning_disc
from tests.test_boot import keys, vm, workdir, workspace  # noqa: F401

pytestmark = pytest.mark.boot

BUILD_NAME = "naming-build-vm"
NETWORKD = "/etc/systemd/network/50-azprov-boottest.network"
IFUPDOWN_PACKAGES = images.PACKAGES + ("ifupdown", "isc-dhcp-client")
DHCPCD_PACKAGES = images.PACKAGES + ("dhcpcd",)


def _deb(workspace) -> Path:
    given = os.environ.get("AZPROV_BOOT_DEB")
    return Path(given) if given else images.build_deb(workspace.path / "dist")


def _layer(workspace, lowers: List[Path], name: str, prepare) -> List[Path]:
    """One more read-only layer: ``prepare(tree)`` on top of ``lowers``."""
    overlay = workspace.overlay(lowers, name)
    try:
        prepare(overlay.root)
    finally:
        overlay.unmount()
    return [overlay.upper, *lowers]


def _build_vm_name(tree: Path) -> None:
    """The image as a build VM leaves it without ``azprov deprovision``: its own name."""
    (tree / "etc/hostname").write_text(BUILD_NAME + "\n")


def _deprovision(tree: Path) -> None:
    """The build VM's name, then the image's own ``azprov deprovision --force`` (in the image)."""
    _build_vm_name(tree)
    result = nspawn.run_in(tree, ["azprov", "deprovision", "--force"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tree / "etc/hostname").read_text() == "localhost\n"


def _networkd(tree: Path) -> None:
    (tree / NETWORKD.lstrip("/")).write_text("[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n")
    result = nspawn.run_in(tree, ["systemctl", "enable", "systemd-networkd.service"])
    assert result.returncode == 0, result.stdout + result.stderr


def _ifupdown(tree: Path) -> None:
    (tree / "etc/network/interfaces.d/eth0").write_text("auto eth0\niface eth0 inet dhcp\n")
    assert os.path.islink(images.enable_link(tree, "networking.service")), "ifupdown is not enabled"


def _dhcpcd(tree: Path) -> None:
    """Debian's dhcpcd.service (manager mode, every interface) with ``hostname`` in
    /etc/dhcpcd.conf, as an admin who wants the name in DNS sets it: Debian's file does not send
    the host name at all; and ``nodev`` (no udev in a container)."""
    conf = tree / "etc/dhcpcd.conf"
    # nodev: a container has no udev, whose "initialized" flag dhcpcd otherwise waits for
    conf.write_text(conf.read_text() + "\n# boot test: send the host name\nhostname\nnodev\n")
    assert os.path.islink(images.enable_link(tree, "dhcpcd.service")), "dhcpcd is not enabled"


@pytest.fixture(scope="module")
def networkd_layers(workspace) -> List[Path]:
    layers = images.make_image(workspace, images.base_tree(), _deb(workspace), name="naming-image")
    return _layer(workspace, layers, "naming-networkd", _networkd)


@pytest.fixture(scope="module")
def ifupdown_layers(workspace) -> List[Path]:
    base = images.base_tree(IFUPDOWN_PACKAGES)
    layers = images.make_image(workspace, base, _deb(workspace), name="naming-ifupdown-image")
    return _layer(workspace, layers, "naming-ifupdown", _ifupdown)


@pytest.fixture(scope="module")
def dhcpcd_layers(workspace) -> List[Path]:
    base = images.base_tree(DHCPCD_PACKAGES)
    layers = images.make_image(workspace, base, _deb(workspace), name="naming-dhcpcd-image")
    return _layer(workspace, layers, "naming-dhcpcd", _dhcpcd)


class DhcpBoot:
    """One boot with a real DHCP exchange: what dnsmasq saw, and when azprov started."""

    def __init__(self, booted: nspawn.Boot, packets: List[dhcp.DhcpPacket], records: List[dict],
                 log: str) -> None:
        self.booted = booted
        self.packets = packets
        self.records = records
        self.log = log
        unit = booted.unit("azprov.service")
        self.azprov_started = int(unit["ExecMainStartTimestampMonotonic"]) / 1e6

    def names(self) -> List[Optional[str]]:
        return [p.name for p in self.packets]

    def after_azprov(self) -> List[dhcp.DhcpPacket]:
        return [p for p in self.packets if p.monotonic > self.azprov_started]

    def explain(self) -> str:
        rows = "\n".join(f"  {p.monotonic - self.azprov_started:+8.3f} s  {p.kind:13} xid {p.xid}  "
                         f"name={p.name}" for p in self.packets)
        return (f"DHCP messages (time from azprov's start):\n{rows}\n--- dnsmasq ---\n{self.log[-4000:]}\n"
                f"{self.booted.explain()}")


def dhcp_boot(workspace, layers: List[Path], scenario: dict, label: str, workdir: Path,
              disc: bool, step: Optional[str] = None) -> DhcpBoot:
    """Boot with the DHCP server watching; ``step``: a shell script the recorder runs before it
    records and powers the container off."""
    from tests.boot import disc as discs

    tree = workspace.overlay(layers, label).root
    if step is not None:
        (tree / images.RECORDER_DIR / "step").write_text(step)
    with dhcp.DhcpNetwork() as network:
        with Emulator(network.fabric, scenario, workdir, label) as fabric, \
                dhcp.DhcpServer(network, workdir, label) as server:
            args = network.nspawn_args()
            if disc:
                image = provisioning_disc(scenario, workdir / label)
                with discs.attached(image) as attach:
                    booted = nspawn.boot(tree, network.vm.name, workdir=workdir, label=label,
                                         extra_args=[*args, *attach])
            else:
                booted = nspawn.boot(tree, network.vm.name, workdir=workdir, label=label, extra_args=args)
            fabric.stop()
            server.stop()
            return DhcpBoot(booted, server.packets(), fabric.records(), server.text())


def _ready(boot: DhcpBoot) -> None:
    states = [r["report"]["state"] for r in boot.records if r.get("endpoint") == "health" and "report" in r]
    assert states == ["Ready"], boot.explain()


# --- systemd-networkd --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def networkd_disc_boot(workspace, networkd_layers, keys, workdir):  # noqa: F811
    layers = _layer(workspace, networkd_layers, "naming-networkd-buildname", _build_vm_name)
    scenario = vm("naming-disc-vm", "discadmin", keys["vm1"][1], incarnation=1)
    return scenario, dhcp_boot(workspace, layers, scenario, "naming-networkd-disc", workdir, disc=True)


@pytest.fixture(scope="module")
def networkd_imds_boot(workspace, networkd_layers, keys, workdir):  # noqa: F811
    layers = _layer(workspace, networkd_layers, "naming-networkd-deprov", _deprovision)
    scenario = vm("naming-imds-vm", "imdsadmin", keys["vm1"][1], incarnation=1)
    return scenario, dhcp_boot(workspace, layers, scenario, "naming-networkd-imds", workdir, disc=False)


def test_networkd_with_the_disc_every_request_carries_the_vms_name(networkd_disc_boot):
    """The image still has the build VM's name; the disc's name is set before networkd starts,
    so networkd's very first DISCOVER carries the VM's name, and so does every message."""
    scenario, boot = networkd_disc_boot
    _ready(boot)
    assert boot.packets, boot.explain()
    assert boot.packets[0].monotonic < boot.azprov_started, boot.explain()  # the lease came first
    assert boot.names() == [scenario["computer_name"]] * len(boot.packets), boot.explain()
    assert BUILD_NAME not in boot.log
    messages = [str(e.get("MESSAGE")) for e in boot.booted.journal]
    assert any("host name naming-disc-vm set before the network" in m for m in messages), boot.explain()
    assert any("not asked again" in m for m in messages), boot.explain()
    assert boot.booted.record["hostname"] == scenario["computer_name"]


def test_the_early_stage_timing_with_a_disc(networkd_disc_boot, workdir, capsys):  # noqa: F811
    """Prints what the early stage costs when it reads a disc (figures, not a timed assertion)
    and checks the order: it ended before networkd's first DHCP message and before azprov."""
    from tests.boot import timing

    _scenario, boot = networkd_disc_boot
    timeline = timing.breakdown(boot.booted.record, boot.booted.journal, boot.records)
    text = timeline.format()
    (workdir / "naming-networkd-disc.timing.txt").write_text(text + "\n")
    with capsys.disabled():
        print(f"\n{text}")
    early = boot.booted.unit("azprov-hostname.service")
    assert early["Result"] == "success" and early["ExecMainStatus"] == "0", early
    ended = int(early["ExecMainExitTimestampMonotonic"]) / 1e6
    assert ended < boot.packets[0].monotonic < boot.azprov_started, boot.explain()


def test_networkd_with_imds_alone_reconfigure_sends_the_new_name(networkd_imds_boot):
    """Generalized image (localhost: networkd sends no name); IMDS names the VM after the network
    came up: the first message after azprov started carries the new name, none the build VM's."""
    scenario, boot = networkd_imds_boot
    _ready(boot)
    before = [p for p in boot.packets if p.monotonic < boot.azprov_started]
    after = boot.after_azprov()
    assert before and all(p.name is None for p in before), boot.explain()
    assert after and after[0].name == scenario["computer_name"], boot.explain()
    assert all(p.name == scenario["computer_name"] for p in after), boot.explain()
    assert BUILD_NAME not in boot.log
    messages = [str(e.get("MESSAGE")) for e in boot.booted.journal]
    assert any("networkctl reconfigure eth0" in m for m in messages), boot.explain()


# --- ifupdown + ISC dhclient -------------------------------------------------------------------

@pytest.fixture(scope="module")
def ifupdown_disc_boot(workspace, ifupdown_layers, keys, workdir):  # noqa: F811
    layers = _layer(workspace, ifupdown_layers, "naming-ifupdown-buildname", _build_vm_name)
    scenario = vm("naming-dhcdisc-vm", "dhcdiscadmin", keys["vm1"][1], incarnation=1)
    return scenario, dhcp_boot(workspace, layers, scenario, "naming-ifupdown-disc", workdir, disc=True)


def test_dhclient_with_the_disc_every_request_carries_the_vms_name(ifupdown_disc_boot):
    """networking.service comes after network-pre.target too: dhclient's gethostname() is the
    disc's name from its first DISCOVER."""
    scenario, boot = ifupdown_disc_boot
    _ready(boot)
    assert boot.packets and boot.packets[0].monotonic < boot.azprov_started, boot.explain()
    assert boot.names() == [scenario["computer_name"]] * len(boot.packets), boot.explain()
    assert BUILD_NAME not in boot.log


@pytest.fixture(scope="module")
def ifupdown_imds_boot(workspace, ifupdown_layers, keys, workdir):  # noqa: F811
    layers = _layer(workspace, ifupdown_layers, "naming-ifupdown-deprov", _deprovision)
    scenario = vm("naming-dhclient-vm", "dhcadmin", keys["vm1"][1], incarnation=1)
    return scenario, dhcp_boot(workspace, layers, scenario, "naming-ifupdown-imds", workdir, disc=False)


def test_dhclient_with_imds_alone_is_restarted_with_the_new_name(ifupdown_imds_boot):
    """dhclient sends gethostname() as read when it starts: localhost on a generalized image, the
    VM's name once azprov restarted it; never the build VM's."""
    scenario, boot = ifupdown_imds_boot
    _ready(boot)
    before = [p for p in boot.packets if p.monotonic < boot.azprov_started]
    requests_after = [p for p in boot.after_azprov() if p.kind != "DHCPRELEASE"]
    assert before and all(p.name in (None, "localhost") for p in before), boot.explain()
    assert requests_after and requests_after[0].name == scenario["computer_name"], boot.explain()
    assert BUILD_NAME not in boot.log


# --- dhcpcd ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dhcpcd_disc_boot(workspace, dhcpcd_layers, keys, workdir):  # noqa: F811
    layers = _layer(workspace, dhcpcd_layers, "naming-dhcpcd-buildname", _build_vm_name)
    scenario = vm("naming-dhcpcd-disc", "dhcpcdadmin", keys["vm1"][1], incarnation=1)
    return scenario, dhcp_boot(workspace, layers, scenario, "naming-dhcpcd-disc", workdir, disc=True)


# ``dhcpcd --rebind`` only signals the daemon, which sends its REQUEST after a random delay (up to
# a second): azprov may be done, and the recorder power the container off, before that.  A VM
# stays up; here the recorder waits (at most 20 s) for dhcpcd's lease after the rebind.
DHCPCD_REBOUND = """for attempt in $(seq 40); do
    journalctl -b -o cat -t dhcpcd | sed -n '/control command: dhcpcd --rebind eth0/,$p' \
        | grep -E -q 'eth0: (leased|renewed) ' && exit 0
    sleep 0.5
done
echo "dhcpcd did not lease again within 20 s of the rebind"
exit 1
"""


@pytest.fixture(scope="module")
def dhcpcd_imds_boot(workspace, dhcpcd_layers, keys, workdir):  # noqa: F811
    layers = _layer(workspace, dhcpcd_layers, "naming-dhcpcd-deprov", _deprovision)
    scenario = vm("naming-dhcpcd-imds", "dhcpcdadmin", keys["vm1"][1], incarnation=1)
    return scenario, dhcp_boot(workspace, layers, scenario, "naming-dhcpcd-imds", workdir, disc=False,
                               step=DHCPCD_REBOUND)


def test_dhcpcd_with_the_disc_every_request_carries_the_vms_name(dhcpcd_disc_boot):
    """dhcpcd.service is ordered only before network.target: azprov-hostname.service names it
    (Before=dhcpcd.service), so its first message carries the disc's name."""
    scenario, boot = dhcpcd_disc_boot
    _ready(boot)
    assert boot.packets, boot.explain()  # no wait-online here: azprov may start before the lease
    assert boot.names() == [scenario["computer_name"]] * len(boot.packets), boot.explain()
    assert BUILD_NAME not in boot.log


def test_dhcpcd_with_imds_alone_rebind_sends_the_new_name(dhcpcd_imds_boot):
    """dhcpcd sends no name for localhost; after ``dhcpcd --rebind eth0`` its first message
    carries the VM's name.  No wait-online unit comes with dhcpcd, so azprov may start before the
    lease: the line is azprov's "asked to send" message, not the unit's start."""
    scenario, boot = dhcpcd_imds_boot
    _ready(boot)
    asked = [float(e["__MONOTONIC_TIMESTAMP"]) / 1e6 for e in boot.booted.journal
             if "(dhcpcd --rebind eth0)" in str(e.get("MESSAGE"))]
    assert len(asked) == 1, boot.explain()
    before = [p for p in boot.packets if p.monotonic < asked[0]]
    after = [p for p in boot.packets if p.monotonic > asked[0] and p.kind != "DHCPRELEASE"]
    assert before and all(p.name is None for p in before), boot.explain()
    assert after and all(p.name == scenario["computer_name"] for p in after), boot.explain()
    assert BUILD_NAME not in boot.log
    assert (boot.booted.record.get("step") or {}).get("rc") == 0, boot.booted.record.get("step")
