"""Provisioning discs built by real tools for the reader tests (genisoimage, mkudffs, pycdlib).

Each builder writes an image holding the given ``ovf-env.xml`` (or an empty file system) and
returns its path.  The tools are Debian packages listed in ``.ci/apt-packages`` (pycdlib is in the
``test`` extra): a missing tool fails the test rather than skipping it.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

OVF_NS = "http://schemas.dmtf.org/ovf/environment/1"
WA_NS = "http://schemas.microsoft.com/windowsazure"


def _source(tmp: Path, ovf: bytes, extra: int = 0) -> Path:
    source = tmp / "src"
    source.mkdir(exist_ok=True)
    (source / "ovf-env.xml").write_bytes(ovf)
    for index in range(extra):  # other files, so the reader walks past them
        (source / f"file-{index:03d}.txt").write_text(f"{index}\n")
    return source


def genisoimage(tmp: Path, ovf: bytes, *flags: str, extra: int = 0, name: str = "disc.iso") -> Path:
    """``genisoimage`` with ``flags``: ``-udf`` gives ISO9660 + UDF 1.02; ``-R``/``-J`` add Rock
    Ridge and Joliet names; no flags give plain ISO9660 (``OVF_ENV.XML;1``)."""
    out = tmp / name
    subprocess.run(["genisoimage", "-quiet", "-o", str(out), *flags, str(_source(tmp, ovf, extra))],
                   check=True)
    return out


def udf_only(tmp: Path, ovf: bytes) -> Path:
    """A UDF-only image: genisoimage's ISO9660 + UDF image with its ISO9660 descriptors removed
    (the UDF recognition sequence moved up to sector 16, as a UDF-only writer lays it out)."""
    bridge = genisoimage(tmp, ovf, "-udf", name="bridge.iso")
    data = bytearray(bridge.read_bytes())
    sector = 2048
    descriptors = [bytes(data[i * sector:(i + 1) * sector]) for i in range(16, 32)]
    udf_vrs = [d for d in descriptors if d[1:6] in (b"BEA01", b"NSR02", b"NSR03", b"TEA01")]
    assert [d[1:6] for d in udf_vrs] == [b"BEA01", b"NSR02", b"TEA01"], "unexpected genisoimage layout"
    data[16 * sector:32 * sector] = b"".join(udf_vrs).ljust(16 * sector, b"\0")
    out = tmp / "udf-only.img"
    out.write_bytes(bytes(data))
    return out


def pycdlib_udf260(tmp: Path, ovf: bytes) -> Path:
    """pycdlib's ISO9660 + UDF 2.60 image."""
    import pycdlib

    disc = pycdlib.PyCdlib()
    disc.new(udf="2.60", interchange_level=3)
    disc.add_fp(io.BytesIO(ovf), len(ovf), "/OVF_ENV.XML;1", udf_path="/ovf-env.xml")
    out = tmp / "udf260.iso"
    disc.write(str(out))
    disc.close()
    return out


def mkudffs(tmp: Path, media: str, revision: str, name: str = "mkudffs.img") -> Path:
    """An empty UDF file system from ``mkudffs`` (udftools cannot add files without a mount)."""
    out = tmp / name
    with open(out, "wb") as handle:
        handle.truncate(8 * 1024 * 1024)
    subprocess.run(["mkudffs", "-b", "2048", f"--media-type={media}", f"--udfrev={revision}",
                    str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def ovf_env(*, hostname: str = "vm-from-disc", username: str = "azureuser",
            password: str = "Disc-Passw0rd!", disable_password_auth: str = "false",
            custom_data: str = "IyEvYmluL3NoCmVjaG8gaGVsbG8K", keys: tuple = (),
            platform: str = "<PreprovisionedVm>false</PreprovisionedVm>") -> bytes:
    """An ovf-env.xml laid out as Azure writes it: default namespace, ``wa:`` prefix."""
    key_xml = "".join(
        f"<PublicKey><Fingerprint>{fp}</Fingerprint><Path>/home/{username}/.ssh/authorized_keys"
        f"</Path>{f'<Value>{value}</Value>' if value else ''}</PublicKey>" for fp, value in keys)
    password_xml = f"<UserPassword>{password}</UserPassword>" if password else ""
    custom_xml = f"<CustomData>{custom_data}</CustomData>" if custom_data else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Environment xmlns="{OVF_NS}" xmlns:oe="{OVF_NS}" xmlns:wa="{WA_NS}" '
        'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        "<wa:ProvisioningSection><wa:Version>1.0</wa:Version>"
        f'<LinuxProvisioningConfigurationSet xmlns="{WA_NS}" '
        'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        "<ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>"
        f"<HostName>{hostname}</HostName><UserName>{username}</UserName>{password_xml}"
        f"<DisableSshPasswordAuthentication>{disable_password_auth}</DisableSshPasswordAuthentication>"
        f"<SSH><PublicKeys>{key_xml}</PublicKeys><KeyPairs /></SSH>{custom_xml}"
        "</LinuxProvisioningConfigurationSet></wa:ProvisioningSection>"
        "<wa:PlatformSettingsSection><wa:Version>1.0</wa:Version>"
        f'<PlatformSettings xmlns="{WA_NS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        f"<KmsServerHostname>kms.core.windows.net</KmsServerHostname>{platform}"
        "</PlatformSettings></wa:PlatformSettingsSection></Environment>\n"
    ).encode()


def cross_check_7z(image: Path) -> bytes:
    """ovf-env.xml as 7-Zip extracts it (an independent reader)."""
    out = subprocess.run(["7z", "e", "-so", str(image), "ovf-env.xml"], check=True,
                         capture_output=True)
    return out.stdout


def udfinfo(image: Path) -> dict:
    out = subprocess.run(["udfinfo", str(image)], check=True, capture_output=True, text=True,
                         env={**os.environ, "LC_ALL": "C"})
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
