"""What a marketplace build VM's WALinuxAgent and cloud-init leave behind (per-VM state and logs),
planted into an image tree for deprovision/check tests and the bake boot test."""

from __future__ import annotations

import os
from typing import Dict

EXTENSION = "Microsoft.Azure.Extensions.CustomScript-2.1.10"
FILES: Dict[str, str] = {
    "var/lib/waagent/ovf-env.xml": "<Environment><CustomData>c2VjcmV0</CustomData></Environment>\n",
    "var/lib/waagent/TransportPrivate.pem": "-----BEGIN PRIVATE KEY-----\nbuild-vm\n-----END PRIVATE KEY-----\n",
    "var/lib/waagent/TransportCert.pem": "-----BEGIN CERTIFICATE-----\nbuild-vm\n-----END CERTIFICATE-----\n",
    "var/lib/waagent/Certificates.pem": "-----BEGIN CERTIFICATE-----\nbuild-vm\n-----END CERTIFICATE-----\n",
    "var/lib/waagent/6B3E1C0A.prv": "-----BEGIN PRIVATE KEY-----\nuser\n-----END PRIVATE KEY-----\n",
    "var/lib/waagent/provisioned": "4ea1f36a-5cd5-4f56-8e6a-c0e39b4f07ad\n",
    "var/lib/waagent/GoalState.1.xml": "<GoalState/>\n",
    "var/lib/waagent/ExtensionsConfig.1.xml": "<Extensions/>\n",
    "var/lib/waagent/history/2026-12-01T10-00-00__1/GoalState.xml": "<GoalState/>\n",
    f"var/lib/waagent/{EXTENSION}/config/0.settings": '{"protectedSettings": "c2VjcmV0"}\n',
    f"var/lib/waagent/{EXTENSION}/status/0.status": "[]\n",
    "var/log/waagent.log": "2026/12/01 10:00:00 INFO Daemon Azure Linux Agent\n",
    "var/log/azure/custom-script/handler.log": "ran\n",
    "var/lib/cloud/instances/4ea1f36a-5cd5-4f56-8e6a-c0e39b4f07ad/user-data.txt": "#!/bin/sh\necho secret\n",
    "var/lib/cloud/instances/4ea1f36a-5cd5-4f56-8e6a-c0e39b4f07ad/obj.pkl": "pickle\n",
    "var/lib/cloud/data/instance-id": "4ea1f36a-5cd5-4f56-8e6a-c0e39b4f07ad\n",
    "var/lib/cloud/data/previous-hostname": "build-vm\n",
    "var/lib/cloud/seed/azure/ovf-env.xml": "<Environment/>\n",
    "var/lib/cloud/sem/config_scripts_per_once.once": "1\n",
    "var/log/cloud-init.log": "cloud-init ran\n",
    "var/log/cloud-init-output.log": "output\n",
}
# Image content that stays: WALinuxAgent's configuration, cloud-init's and the image's own scripts.
KEPT: Dict[str, str] = {
    "etc/waagent.conf": "Provisioning.Agent=disabled\n",
    "var/lib/cloud/scripts/per-boot/image-script.sh": "#!/bin/sh\n",
}


def plant(root: str, *, kept: bool = True) -> None:
    for path, text in {**FILES, **(KEPT if kept else {})}.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as handle:
            handle.write(text)
        os.chmod(full, 0o600)
    link = os.path.join(root, "var/lib/cloud/instance")
    if not os.path.lexists(link):
        os.symlink("/var/lib/cloud/instances/4ea1f36a-5cd5-4f56-8e6a-c0e39b4f07ad", link)


def left(root: str) -> list:
    """The planted per-VM paths still present (links not followed)."""
    paths = list(FILES) + ["var/lib/cloud/instance"]
    return sorted(path for path in paths if os.path.lexists(os.path.join(root, path)))
