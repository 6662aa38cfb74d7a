"""A provisioning disc for a boot: ``provisioning_disc(scenario, directory)`` writes one (UDF, with
the scenario's ``ovf-env.xml``), and the image is attached read-only as ``/dev/sr0``.

``attached(image)`` sets up a read-only loop device (``losetup -r -f --show``) and yields the
systemd-nspawn options that bind it into the container as ``/dev/sr0`` and allow reading it;
the loop device is always detached afterwards.  ``with secret_dir(workdir, name, files)`` makes a
0700 directory outside the tree for what the recorder needs but the image must never hold (the
password for the SSH password login), bound read-only at ``/run/azprov-boottest-secret``, and
removes it afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

from tests.boot.image import CLEAN_ENV, HarnessError

SECRET_MOUNT = "/run/azprov-boottest-secret"


def provisioning_disc(scenario: dict, directory: Path) -> Path:
    """A UDF disc (genisoimage -udf, as Azure writes UDF) with the emulator's ovf-env.xml for
    ``scenario`` (a dict), in ``directory``."""
    from azprov.fabric.disc import ovf_env
    from azprov.fabric.scenario import Scenario
    from tests.boot.image import run

    source = directory / "disc-source"
    source.mkdir(parents=True, exist_ok=True)
    (source / "ovf-env.xml").write_bytes(ovf_env(Scenario.from_dict(scenario)))
    image = directory / "provisioning-disc.iso"
    run(["genisoimage", "-quiet", "-udf", "-o", str(image), str(source)])
    (source / "ovf-env.xml").unlink()  # the password stays in the image file only
    return image


@contextmanager
def attached(image: Path) -> Iterator[List[str]]:
    result = subprocess.run(["losetup", "-r", "-f", "--show", str(image)], capture_output=True,
                            text=True, env=CLEAN_ENV, timeout=30)
    if result.returncode != 0:
        raise HarnessError(f"losetup -r -f --show {image} failed: {result.stderr.strip()}")
    loop = result.stdout.strip()
    try:
        yield [f"--bind-ro={loop}:/dev/sr0"]
    finally:
        subprocess.run(["losetup", "-d", loop], env=CLEAN_ENV, timeout=30, check=False)


@contextmanager
def secret_dir(workdir: Path, name: str, files: Dict[str, str]) -> Iterator[List[str]]:
    directory = workdir / f"{name}.secret"
    directory.mkdir(mode=0o700, exist_ok=True)
    try:
        for file, text in files.items():
            fd = os.open(directory / file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        yield [f"--bind-ro={directory}:{SECRET_MOUNT}"]
    finally:  # a kept workdir (AZPROV_BOOT_KEEP) must not keep the password either
        shutil.rmtree(directory, ignore_errors=True)
