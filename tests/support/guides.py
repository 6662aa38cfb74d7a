"""The commands the guides' examples run as the last build step, read from the example files.

capture.sh runs them in the build VM over SSH (its ``<<'REMOTE'`` here-document), the Packer
template as its last ``inline`` shell provisioner, the Image Builder template in the
``DeprovisioningScript.sh`` it writes.  The bake boot test (tests/test_boot_bake.py) runs
capture.sh's here-document verbatim; tests/test_examples.py checks that the other two run the
same commands, so that the boot test vouches for all three.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
CAPTURE = EXAMPLES / "gallery" / "capture.sh"
PACKER = EXAMPLES / "packer" / "azprov-debian12.pkr.hcl"
IMAGE_BUILDER = EXAMPLES / "image-builder" / "azprov-template.json"


def capture_remote_commands() -> List[str]:
    """The lines of capture.sh's ``sudo sh -ex <<'REMOTE'`` here-document."""
    lines = CAPTURE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("sudo sh -ex <<'REMOTE'"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == "REMOTE")
    return lines[start + 1:end]


def packer_last_inline() -> List[str]:
    """The strings of the Packer template's last ``inline = [...]`` list."""
    text = PACKER.read_text()
    blocks = re.findall(r"^\s*inline\s*=\s*\[\n(.*?)^\s*\]", text, flags=re.M | re.S)
    assert blocks, f"no inline list in {PACKER}"
    return [json.loads(line.strip().rstrip(",")) for line in blocks[-1].splitlines() if line.strip()]


def image_builder_deprovisioning() -> str:
    """The ``sh -exc '...'`` command that the Image Builder template's DeprovisioningScript.sh runs."""
    template = json.loads(IMAGE_BUILDER.read_text())
    (resource,) = [r for r in template["resources"] if r["type"] == "Microsoft.VirtualMachineImages/imageTemplates"]
    lines = [line for step in resource["properties"]["customize"] for line in step.get("inline", [])
             if "DeprovisioningScript.sh" in line and "sh -exc" in line]
    assert len(lines) == 1, lines
    return re.search(r"sh -exc '([^']*)'", lines[0]).group(1)
