"""``azprov fabric disc``: the provisioning disc of a scenario, as Azure attaches it at first boot.

``ovf_env()`` builds ``ovf-env.xml`` with ElementTree (never from strings), in Azure's layout:
the OVF environment namespace as the default, the Windows Azure one on ``wa:``-prefixed sections
and as the default inside them.  ``iso9660_image()`` writes it onto a minimal ISO9660 image: one
root directory holding ``OVF-ENV.XML;1``, which Linux shows as ``ovf-env.xml`` (Azure writes UDF;
every agent and azprov read ISO9660 too, and the kernel mounts either).  Boot an image with it
attached as a CD-ROM to try password and custom-data VMs before uploading the image.
"""

from __future__ import annotations

import base64
import datetime
import struct
from typing import Optional
from xml.etree import ElementTree

from azprov.fabric.instance import DEFAULT_ADMIN_USERNAME, DEFAULT_COMPUTER_NAME, DEFAULT_PUBLIC_KEY
from azprov.fabric.scenario import Scenario

OVF_NS = "http://schemas.dmtf.org/ovf/environment/1"
WA_NS = "http://schemas.microsoft.com/windowsazure"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
SECTOR = 2048
FILE_NAME = b"OVF-ENV.XML;1"


def ovf_env(scenario: Scenario) -> bytes:
    """The scenario's ovf-env.xml: host name, user, password, keys, custom data."""
    ElementTree.register_namespace("", OVF_NS)
    ElementTree.register_namespace("wa", WA_NS)
    ElementTree.register_namespace("i", XSI_NS)

    def wa(parent, name: str, text: Optional[str] = None):
        element = ElementTree.SubElement(parent, f"{{{WA_NS}}}{name}")
        if text is not None:
            element.text = text
        return element

    root = ElementTree.Element(f"{{{OVF_NS}}}Environment")
    section = wa(root, "ProvisioningSection")
    wa(section, "Version", "1.0")
    config = wa(section, "LinuxProvisioningConfigurationSet")
    wa(config, "ConfigurationSetType", "LinuxProvisioningConfiguration")
    username = scenario.admin_username or DEFAULT_ADMIN_USERNAME
    wa(config, "HostName", scenario.computer_name or DEFAULT_COMPUTER_NAME)
    wa(config, "UserName", username)
    if scenario.admin_password is not None:
        wa(config, "UserPassword", scenario.admin_password)
    wa(config, "DisableSshPasswordAuthentication",
       str(scenario.password_authentication_disabled).lower())
    keys = wa(wa(config, "SSH"), "PublicKeys")
    default_path = f"/home/{username}/.ssh/authorized_keys"
    entries = scenario.public_keys if scenario.public_keys is not None else ((DEFAULT_PUBLIC_KEY, None),)
    for data, path in entries:
        key = wa(keys, "PublicKey")
        wa(key, "Path", path or default_path)
        wa(key, "Value", data)
    if scenario.custom_data is not None:
        wa(config, "CustomData", base64.b64encode(scenario.custom_data.encode()).decode())
    platform_section = wa(root, "PlatformSettingsSection")
    wa(platform_section, "Version", "1.0")
    platform = wa(platform_section, "PlatformSettings")
    wa(platform, "KmsServerHostname", "kms.core.windows.net")
    wa(platform, "ProvisionGuestAgent", "true" if scenario.provision_guest_agent else "false")
    wa(platform, "PreprovisionedVm", "false")
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def _both16(value: int) -> bytes:
    return struct.pack("<H", value) + struct.pack(">H", value)


def _both32(value: int) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value)


def _record(name: bytes, extent: int, length: int, flags: int, when: bytes) -> bytes:
    size = 33 + len(name) + (1 - len(name) % 2)
    body = (bytes([size, 0]) + _both32(extent) + _both32(length) + when + bytes([flags, 0, 0])
            + _both16(1) + bytes([len(name)]) + name)
    return body.ljust(size, b"\0")


def iso9660_image(data: bytes, volume_id: str = "AZPROV_OVF",
                  now: Optional[datetime.datetime] = None) -> bytes:
    """A minimal ISO9660 image whose root directory holds ``data`` as ``OVF-ENV.XML;1``."""
    now = (now or datetime.datetime.now(datetime.timezone.utc)).astimezone(datetime.timezone.utc)
    when = bytes([now.year - 1900, now.month, now.day, now.hour, now.minute, now.second, 0])
    stamp = now.strftime("%Y%m%d%H%M%S00").encode() + b"\0"
    root_lba, file_lba = 20, 21
    file_sectors = max(1, -(-len(data) // SECTOR))
    total = file_lba + file_sectors
    root = (_record(b"\0", root_lba, SECTOR, 2, when) + _record(b"\1", root_lba, SECTOR, 2, when)
            + _record(FILE_NAME, file_lba, len(data), 0, when)).ljust(SECTOR, b"\0")
    pvd = bytearray(SECTOR)
    pvd[0:8] = b"\x01CD001\x01\x00"
    pvd[8:40] = b" " * 32
    pvd[40:72] = volume_id.encode("ascii").ljust(32)[:32]
    pvd[80:88] = _both32(total)
    pvd[120:124] = _both16(1)
    pvd[124:128] = _both16(1)
    pvd[128:132] = _both16(SECTOR)
    pvd[132:140] = _both32(10)  # path table: the root's entry
    pvd[140:144] = struct.pack("<I", 18)
    pvd[148:152] = struct.pack(">I", 19)
    pvd[156:190] = _record(b"\0", root_lba, SECTOR, 2, when)
    pvd[190:813] = b" " * (813 - 190)
    for at in (813, 830, 864):
        pvd[at:at + 17] = stamp
    pvd[847:864] = b"0" * 16 + b"\0"
    pvd[881] = 1
    terminator = b"\xffCD001\x01".ljust(SECTOR, b"\0")
    l_table = (b"\x01\x00" + struct.pack("<I", root_lba) + struct.pack("<H", 1) + b"\0\0").ljust(SECTOR, b"\0")
    m_table = (b"\x01\x00" + struct.pack(">I", root_lba) + struct.pack(">H", 1) + b"\0\0").ljust(SECTOR, b"\0")
    return (bytes(16 * SECTOR) + bytes(pvd) + terminator + l_table + m_table + root
            + data.ljust(file_sectors * SECTOR, b"\0"))


def command(args, config) -> int:
    """``azprov fabric disc --scenario FILE --output disc.iso``."""
    import os
    import sys

    from azprov.fabric.scenario import load_scenario

    scenario = load_scenario(args.scenario) if args.scenario else Scenario()
    image = iso9660_image(ovf_env(scenario))
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(image)
    print(f"azprov fabric: wrote the provisioning disc of scenario {args.scenario or 'default'} "
          f"to {args.output} ({len(image)} bytes, ISO9660, mode 0600: it may hold a password)",
          file=sys.stderr)
    if getattr(args, "json", False):
        import json

        print(json.dumps({"output": args.output, "bytes": len(image)}))
    return 0
