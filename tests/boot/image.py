"""Images for the boot tests: the .deb, the cached mmdebstrap base tree, bootable copies.

- :func:`build_deb` runs ``make deb`` into a private output directory (``AZPROV_DIST``), so
  that a ``dist/`` someone else is building is not disturbed, and checks the package holds
  the provisioning flow.
- :func:`base_tree` returns a Debian 12 root made by ``mmdebstrap`` with :data:`PACKAGES`,
  cached in ``.cache/boot/base-<hash>`` (the hash covers the suite, the package list, the APT
  sources and this module's recipe version); built once, in a temporary directory renamed
  into place when complete.
- :func:`make_image` installs the .deb with ``dpkg -i`` on top of the base tree (the package's
  own maintainer scripts enable ``azprov.service``: no override, stock unit and configuration),
  adds the test-only recorder unit from ``tests/boot/units/``, and generalizes the tree as an
  image pipeline would: no SSH host keys, a neutral hostname, an empty machine-id, Debian's
  cloud-image ``/etc/hosts``, and a persistent journal (``/var/log/journal``).
- :class:`Workspace` / :class:`Overlay`: each boot scenario gets its own overlayfs tree over
  the image's layers (nothing is copied, the base tree is never written), unmounted and removed
  at the end of the run; :func:`remove_tree` refuses to delete through a mount point.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
# AZPROV_BOOT_CACHE lets several checkouts (git worktrees) share one cache.
CACHE = Path(os.environ.get("AZPROV_BOOT_CACHE") or REPO / ".cache" / "boot")
UNITS = Path(__file__).resolve().parent / "units"
SUITE = "bookworm"
# What the image needs to boot and what azprov needs at run time (python3-* are its Depends;
# passwd and openssh-client are Depends too; sudo and openssh-server Recommends), plus dbus for
# hostnamectl (systemd-hostnamed is reached over the system bus).
PACKAGES = (
    "systemd-sysv", "dbus", "python3", "python3-requests", "python3-defusedxml",
    "python3-systemd", "openssh-server", "openssh-client", "sudo", "passwd", "iproute2",
    "sshpass",  # the recorder's SSH password login (provisioning disc tests)
    "e2fsprogs",  # a Depends of azprov (mkfs.ext4 for the temporary disk), in every cloud image
)
# The variant for WALinuxAgent kept for VM extensions next to azprov: Debian's own package.
WAAGENT_PACKAGES = PACKAGES + ("waagent",)
# The WireServer firewall tests: both tools an image may have (nft is used when present).
FIREWALL_PACKAGES = PACKAGES + ("nftables", "iptables")
# The bake test's build VM, as a Debian marketplace image has it: the Azure agent and cloud-init.
BUILD_VM_PACKAGES = WAAGENT_PACKAGES + ("cloud-init",)
# Bump when the way the base tree is made changes (invalidates the cache).
RECIPE = 1
HOST_TOOLS = {"mmdebstrap": "mmdebstrap", "systemd-nspawn": "systemd-container", "ip": "iproute2",
              "ss": "iproute2", "journalctl": "systemd", "ssh-keygen": "openssh-client",
              "make": "make", "dpkg-deb": "dpkg"}
RECORDER_UNIT = "azprov-boottest-record.service"
RECORDER_DIR = "var/lib/azprov-boottest"
IMAGE_HOSTNAME = "debian12-generalized"
ETC_HOSTS = """\
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
"""
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": os.environ.get("HOME", "/root"),
             "LC_ALL": "C.UTF-8"}


class HarnessError(RuntimeError):
    """The harness could not set something up (not a finding about azprov)."""


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 600,
        env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None,
        input: Optional[str] = None) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                            env=env if env is not None else CLEAN_ENV, cwd=cwd, input=input,
                            stdin=None if input is not None else subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} exited {result.returncode}:\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def missing_tools() -> List[str]:
    """Debian packages providing the host tools the harness needs that are not installed."""
    return sorted({package for tool, package in HOST_TOOLS.items() if shutil.which(tool, path=CLEAN_ENV["PATH"]) is None})


def install_tools() -> Optional[str]:
    """Install missing host tools with apt-get; returns why that failed, or None."""
    packages = missing_tools()
    if not packages:
        return None
    env = dict(CLEAN_ENV, DEBIAN_FRONTEND="noninteractive")
    try:
        run(["apt-get", "update", "-q"], env=env, timeout=600)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env, timeout=900)
    except (HarnessError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot install {', '.join(packages)}: {exc}"
    still = missing_tools()
    return f"still missing after apt-get install: {', '.join(still)}" if still else None


# --- the package ---------------------------------------------------------------------------

def build_deb(outdir: Path, source: Path = REPO) -> Path:
    """``make deb`` in ``source`` (this checkout, or an exported tree of another revision) into
    ``outdir``; the package must contain the provisioning flow."""
    outdir.mkdir(parents=True, exist_ok=True)
    result = run(["make", "--no-print-directory", "deb"], cwd=source,
                 env=dict(CLEAN_ENV, AZPROV_DIST=str(outdir)), check=False, timeout=900)
    debs = sorted(outdir.glob("azprov_*_all.deb"))
    if result.returncode != 0 or len(debs) != 1:
        raise HarnessError(f"make deb failed (exit {result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    listing = run(["dpkg-deb", "-c", str(debs[0])]).stdout
    units = [f"{path.name}" for path in sorted((source / "systemd").glob("*.service"))]
    for needed in ("/azprov/provision.py", "/azprov/fabric/", "/usr/bin/azprov", *units):
        if needed not in listing:
            raise HarnessError(f"{debs[0].name} has no {needed!r}: the package is built from the "
                               f"files git tracks (packaging/export-tree.sh); is it committed?")
    return debs[0]


# --- the cached base tree ------------------------------------------------------------------

def _sources() -> Optional[Path]:
    """The host's APT sources to build from (the mirrors this machine may use), if any."""
    override = os.environ.get("AZPROV_BOOT_SOURCES")
    if override:
        return Path(override)
    for candidate in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    return None


def _sources_text(suite: str) -> Optional[str]:
    """The host's APT sources for ``suite`` (its own suite's names replaced), or None."""
    sources = _sources()
    return sources.read_text().replace(SUITE, suite) if sources is not None else None


def cache_key(packages: Sequence[str] = PACKAGES, suite: str = SUITE) -> str:
    sources = _sources_text(suite)
    data = {
        "suite": suite,
        "packages": sorted(packages),
        "recipe": RECIPE,
        "sources": sources or "http://deb.debian.org/debian",
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def base_tree(packages: Sequence[str] = PACKAGES, suite: str = SUITE) -> Path:
    """The cached mmdebstrap tree of Debian ``suite`` with ``packages`` (built now if absent);
    never modified by the tests.  Each package list is its own cached tree."""
    CACHE.mkdir(parents=True, exist_ok=True)
    key = cache_key(packages, suite)
    tree = CACHE / f"base-{key}"
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (CACHE / f"base-{key}.complete").exists() and tree.is_dir():
            return tree
        # A half-built tree of this key is stale; trees of other keys may be in use by another
        # checkout sharing the cache, so they stay.
        if tree.is_dir():
            remove_tree(tree)
        for stale in CACHE.glob("building-*"):
            remove_tree(stale)
        building = Path(tempfile.mkdtemp(prefix="building-", dir=CACHE))
        try:
            target = building / "root"
            sources = _sources_text(suite)
            argv = ["mmdebstrap", "--quiet", "--variant=apt", "--mode=root", "--format=directory",
                    f"--include={','.join(packages)}", suite, str(target)]
            if sources is not None:
                (building / "sources").write_text(sources)
                argv.append(str(building / "sources"))
            started = time.monotonic()
            run(argv, timeout=900)
            (building / "seconds").write_text(f"{time.monotonic() - started:.1f}\n")
            os.rename(target, tree)
            (CACHE / f"base-{key}.complete").write_text(json.dumps({"packages": list(packages), "suite": suite}) + "\n")
        finally:
            remove_tree(building)
        return tree


# --- bootable images -----------------------------------------------------------------------

def _mounts_under(path: Path) -> List[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point == prefix.rstrip("/") or mount_point.startswith(prefix):
                found.append(mount_point)
    return found


def remove_tree(path: Path) -> None:
    """``rm -rf`` a tree the harness made, never through a mount point left inside it."""
    if not os.path.lexists(path):
        return
    mounts = _mounts_under(Path(path))
    if mounts:
        raise HarnessError(f"not removing {path}: mounts are left inside it: {mounts}")
    shutil.rmtree(path)


def prune_runs(max_age: float = 24 * 3600) -> None:
    """Remove run directories left by interrupted or kept runs more than ``max_age`` s ago."""
    runs = CACHE / "runs"
    if not runs.is_dir():
        return
    for entry in runs.iterdir():
        try:
            if not entry.is_dir() or time.time() - entry.stat().st_mtime <= max_age:
                continue
            for mount_point in sorted(_mounts_under(entry), reverse=True):  # a killed run's overlays
                run(["umount", "--lazy", mount_point], check=False)
            remove_tree(entry)
        except (OSError, HarnessError):
            pass


class Overlay:
    """An overlayfs tree: read-only ``lowers`` (first on top) + a private upper directory.

    ``dir/root`` is the merged tree the harness boots, ``dir/upper`` holds what changed (new
    files, whiteouts for removed ones).  Mounted in the host's mount namespace, so always
    unmounted by its owner (:class:`Workspace` does it at the end of a run).
    """

    def __init__(self, lowers: Sequence[Path], directory: Path) -> None:
        self.lowers = [Path(p) for p in lowers]
        self.dir = Path(directory)
        self.root = self.dir / "root"
        self.upper = self.dir / "upper"
        self.mounted = False

    def mount(self) -> "Overlay":
        if os.path.lexists(self.dir):
            raise HarnessError(f"{self.dir} exists already")
        for name in ("upper", "work", "root"):
            (self.dir / name).mkdir(parents=True)
        options = (f"lowerdir={':'.join(str(p) for p in self.lowers)},"
                   f"upperdir={self.upper},workdir={self.dir / 'work'}")
        run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)])
        self.mounted = True
        return self

    def unmount(self) -> None:
        if not self.mounted:
            return
        for attempt in range(10):
            if run(["umount", str(self.root)], check=False).returncode == 0:
                break
            time.sleep(0.5)  # a process of a boot may still be letting go of it
        else:
            run(["umount", "--lazy", str(self.root)])  # detached now: removing the run is safe
        self.mounted = False


class Workspace:
    """One run's directory under ``.cache/boot/runs/``, and the overlays mounted in it.

    :meth:`close` unmounts every overlay (last first) and removes the directory, unless
    ``keep`` (then the upper directories hold what each boot changed, its journal included).
    """

    def __init__(self, keep: bool = False) -> None:
        prune_runs()
        self.path = CACHE / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{os.urandom(2).hex()}"
        self.path.mkdir(parents=True)
        self.keep = keep
        self.overlays: List[Overlay] = []

    def overlay(self, lowers: Sequence[Path], name: str) -> Overlay:
        overlay = Overlay(lowers, self.path / name)
        self.overlays.append(overlay)
        return overlay.mount()

    def close(self) -> None:
        problems = []
        for overlay in reversed(self.overlays):
            try:
                overlay.unmount()
            except HarnessError as exc:
                problems.append(str(exc))
        if problems:
            raise HarnessError("; ".join(problems))
        if not self.keep:
            remove_tree(self.path)


def enable_link(tree: Path, unit: str, target: str = "multi-user.target") -> Path:
    return tree / "etc/systemd/system" / f"{target}.wants" / unit


def set_waagent_conf(tree: Path, settings: Dict[str, str]) -> None:
    """Set ``Key=value`` lines in the image's ``/etc/waagent.conf`` (replaced where present)."""
    path = tree / "etc/waagent.conf"
    lines = path.read_text().splitlines()
    for key, value in settings.items():
        wanted = f"{key}={value}"
        found = [i for i, line in enumerate(lines) if line.split("=", 1)[0].strip() == key]
        for i in found:
            lines[i] = wanted
        if not found:
            lines.append(wanted)
    path.write_text("\n".join(lines) + "\n")


def add_recorder(tree: Path) -> None:
    """Install and enable the test-only recorder unit (``tests/boot/units/``): ordered after
    azprov, sshd and multi-user.target, it records the boot and powers the container off."""
    shutil.copy2(UNITS / RECORDER_UNIT, tree / "etc/systemd/system" / RECORDER_UNIT)
    os.chmod(tree / "etc/systemd/system" / RECORDER_UNIT, 0o644)
    shutil.copy2(UNITS / "azprov-boottest-record", tree / "usr/local/sbin/azprov-boottest-record")
    os.chmod(tree / "usr/local/sbin/azprov-boottest-record", 0o755)
    link = enable_link(tree, RECORDER_UNIT)
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(f"/etc/systemd/system/{RECORDER_UNIT}", link)
    (tree / RECORDER_DIR).mkdir(mode=0o700, parents=True, exist_ok=True)


def make_image(workspace: Workspace, base: Path, deb: Path, name: str = "image",
               waagent: Optional[Dict[str, str]] = None, recorder: bool = True) -> List[Path]:
    """Make the bootable image on top of ``base``: install ``deb``, the recorder unit (unless
    ``recorder`` is false: the VM tests read a running VM over SSH), generalize.

    Built in an overlay that is unmounted again; returns the layers (top first) a scenario
    mounts as its read-only lowers, so that every boot scenario starts from the same image and
    writes only to its own upper directory.
    """
    from tests.boot import nspawn

    overlay = workspace.overlay([base], name)
    dest = overlay.root
    try:
        shutil.copy2(deb, dest / "var/tmp" / deb.name)  # not /tmp: nspawn mounts a tmpfs there
        install = nspawn.run_in(dest, ["dpkg", "-i", f"/var/tmp/{deb.name}"],
                                setenv={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
        (dest / "var/tmp" / deb.name).unlink()
        if install.returncode != 0:
            raise HarnessError(f"dpkg -i {deb.name} in the image failed:\n{install.stdout[-4000:]}\n{install.stderr[-4000:]}")

        if recorder:
            add_recorder(dest)

        if waagent is not None:  # WALinuxAgent kept next to azprov: its configuration
            set_waagent_conf(dest, waagent)
            # Debian's unit has ConditionVirtualization=microsoft (Hyper-V); this is nspawn.
            # Test-only drop-in: an empty assignment resets the unit's conditions.
            dropin = dest / "etc/systemd/system/walinuxagent.service.d"
            dropin.mkdir(parents=True, exist_ok=True)
            (dropin / "azprov-boottest.conf").write_text(
                "# boot tests only: run under systemd-nspawn too\n[Unit]\nConditionVirtualization=\n")

        # Generalize, as an image pipeline leaves a captured disk.
        for key in (dest / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        (dest / "etc/hostname").write_text(IMAGE_HOSTNAME + "\n")
        if not (dest / "etc/hosts").exists():  # mmdebstrap writes none; Debian's cloud images have this
            (dest / "etc/hosts").write_text(ETC_HOSTS)
        (dest / "etc/machine-id").write_text("")
        (dest / "var/log/journal").mkdir(exist_ok=True)
    finally:
        overlay.unmount()
    return [overlay.upper, base]
