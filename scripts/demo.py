#!/usr/bin/env python3
"""`make demo`: a full first-boot provisioning against the built-in fabric emulator.

1. Builds a small Debian-like image tree (a generalized image: no SSH host keys, azprov.service
   enabled) in a temporary directory.
2. Starts the fabric emulator on loopback, serving incarnation 3 and a VM that asks for the
   hostname ``azprov-demo``, the admin user ``azureuser`` and one SSH key.
3. Runs the real ``azprov provision --root TREE`` against it, showing every step.
4. Shows what changed in the tree and what the fabric received, then boots "again": azprov
   recognises the VM and does nothing, without a word to the WireServer.

Nothing outside the temporary tree is touched. Exit status 0 only if Ready was received and the
second run stayed silent. ``--keep`` keeps the tree for a look around.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from azprov.fabric import FabricEmulator, Scenario  # noqa: E402
from tests.support.scratch_root import make_scratch_root  # noqa: E402

SCENARIO = {
    "description": "make demo: a VM created from a generalized image",
    "incarnation": 3,
    "computer_name": "azprov-demo",
    "admin_username": "azureuser",
}


def heading(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def describe(tree: Path, relative: str) -> str:
    path = tree / relative
    if not os.path.lexists(path):
        return f"  {relative}: (absent)"
    info = path.lstat()
    owner = f"{info.st_uid}:{info.st_gid}"
    return f"  /{relative}  {stat.filemode(info.st_mode)}  {owner}"


def provision(tree: Path, fabric) -> int:
    argv = [sys.executable, "-m", "azprov", "-v", "provision", "--root", str(tree),
            "--wireserver", fabric.wireserver_url, "--imds", fabric.imds_url]
    print("$", " ".join(argv[1:]), flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM")}
    return subprocess.run(argv, cwd=REPO, env=env).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the image tree afterwards")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("demo: run as root (useradd --root needs it); nothing outside a temporary tree is touched",
              file=sys.stderr)
        return 1

    tree = Path(tempfile.mkdtemp(prefix="azprov-demo-"))
    try:
        heading(f"1. a generalized image tree at {tree}")
        make_scratch_root(str(tree))
        print(describe(tree, "etc/systemd/system/multi-user.target.wants/azprov.service"))
        print("  SSH host keys:", sorted(p.name for p in (tree / "etc/ssh").glob("ssh_host_*")) or "none")

        with FabricEmulator(Scenario.from_dict(SCENARIO), wireserver=("127.0.0.1", 0),
                            imds=("127.0.0.1", 0)) as fabric:
            heading(f"2. fabric emulator: WireServer {fabric.wireserver_url}, IMDS {fabric.imds_url}")
            goal = fabric.goal_state
            print(f"  serving incarnation {goal.incarnation}, container {goal.container_id}, "
                  f"instance {goal.instance_id}")

            heading("3. first boot: azprov provision")
            status = provision(tree, fabric)
            if status != 0:
                print(f"demo: azprov provision failed with exit status {status}", file=sys.stderr)
                return 1

            heading("4. what changed in the image tree")
            print("  /etc/hostname:", (tree / "etc/hostname").read_text().strip())
            user = [line for line in (tree / "etc/passwd").read_text().splitlines()
                    if line.startswith("azureuser:")]
            print("  /etc/passwd:", user[0] if user else "(no azureuser!)")
            for relative in ("home/azureuser/.ssh", "home/azureuser/.ssh/authorized_keys",
                             "etc/sudoers.d/90-azprov", "etc/ssh/sshd_config.d/10-azprov.conf",
                             "var/lib/azprov/state.json",
                             "etc/systemd/system/multi-user.target.wants/azprov.service"):
                print(describe(tree, relative))
            print("  SSH host keys:", len(list((tree / "etc/ssh").glob("ssh_host_*_key"))), "generated")

            heading("5. what the fabric received")
            for record in fabric.requests:
                report = record.get("report") or {}
                extra = f"  -> {report.get('state')} for incarnation {report.get('incarnation')}" if report else ""
                print(f"  {record['method']:4} {record['path'][:60]:60} {record['status']}{extra}")
            ready = [r for r in fabric.reports if r["state"] == "Ready"]

            heading("6. second boot: the same VM")
            before = len(fabric.requests)
            status = provision(tree, fabric)
            wireserver_requests = [r for r in fabric.requests[before:] if r["endpoint"] in ("goalstate", "health")]
            print(f"  exit status {status}; requests to the WireServer: {len(wireserver_requests)}")

        ok = len(ready) == 1 and status == 0 and not wireserver_requests
        heading("result: " + ("Ready received once, second boot silent" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"(tree kept at {tree})")
        else:
            shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
