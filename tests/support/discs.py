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


def _retag(block: bytearray, crc_length: int = None) -> None:
    """Recompute a UDF descriptor tag's CRC (over ``crc_length`` bytes after the tag) and checksum."""
    from azprov.media.udf import crc16

    if crc_length is not None:
        block[10:12] = crc_length.to_bytes(2, "little")
    length = int.from_bytes(block[10:12], "little")
    block[8:10] = crc16(bytes(block[16:16 + length])).to_bytes(2, "little")
    block[4] = (sum(block[0:4]) + sum(block[5:16])) & 0xFF


def with_metadata_partition(image: bytes) -> bytes:
    """``image`` (pycdlib's UDF 2.60, one type 1 partition) rewritten the UDF 2.50+ way: a
    metadata partition map whose metadata file (a new file entry in a free block of the physical
    partition) covers the whole partition, and the file set descriptor, the root directory and
    ovf-env.xml's file identifier addressed through the metadata partition (reference 1).

    The metadata file maps metadata block N to physical block N, so the existing descriptors'
    tag locations stay right.  No tool here writes UDF 2.50 with files (mkudffs makes empty
    volumes, only with a VAT at 2.50+): this exercises the reader's metadata path, not another
    writer's layout."""
    from azprov.media.image import Image
    from azprov.media.udf import UdfVolume, file_identifiers

    sector = 2048
    data = bytearray(image)
    volume = UdfVolume(Image(image))
    (number, (start, length)), = volume.partition_starts.items()
    free = [b for b in range(length) if data[(start + b) * sector:(start + b + 1) * sector] == bytes(sector)]
    metadata_block = free[-1]
    # the metadata file: a file entry (type 250) with one short_ad over the whole partition
    entry = bytearray(sector)
    entry[0:2] = (261).to_bytes(2, "little")
    entry[2:4] = (3).to_bytes(2, "little")
    entry[12:16] = metadata_block.to_bytes(4, "little")
    entry[20:22] = (4).to_bytes(2, "little")  # strategy 4
    entry[27] = 250  # metadata file
    entry[56:64] = (length * sector).to_bytes(8, "little")
    entry[172:176] = (8).to_bytes(4, "little")
    entry[176:180] = (length * sector).to_bytes(4, "little")
    entry[180:184] = (0).to_bytes(4, "little")
    _retag(entry, 176 + 8 - 16)
    data[(start + metadata_block) * sector:(start + metadata_block + 1) * sector] = entry
    # the logical volume descriptor: a second partition map, FSD through it
    anchor = data[256 * sector:257 * sector]
    vds_length, vds_location = int.from_bytes(anchor[16:20], "little"), int.from_bytes(anchor[20:24], "little")
    for block_number in range(vds_location, vds_location + vds_length // sector):
        at = block_number * sector
        if int.from_bytes(data[at:at + 2], "little") != 6:
            continue
        lvd = bytearray(data[at:at + sector])
        table_length = int.from_bytes(lvd[264:268], "little")
        mapping = bytearray(64)
        mapping[0:2] = bytes([2, 64])
        mapping[5:28] = b"*UDF Metadata Partition"
        mapping[28:30] = (0x0250).to_bytes(2, "little")
        mapping[36:38] = (1).to_bytes(2, "little")
        mapping[38:40] = number.to_bytes(2, "little")
        for offset in (40, 44):
            mapping[offset:offset + 4] = metadata_block.to_bytes(4, "little")
        mapping[48:52] = (0xFFFFFFFF).to_bytes(4, "little")
        mapping[52:56] = (32).to_bytes(4, "little")
        mapping[56:58] = (1).to_bytes(2, "little")
        lvd[440 + table_length:440 + table_length + 64] = mapping
        lvd[264:268] = (table_length + 64).to_bytes(4, "little")
        lvd[268:272] = (2).to_bytes(4, "little")
        lvd[256:258] = (1).to_bytes(2, "little")  # FSD in the metadata partition
        _retag(lvd, 440 + table_length + 64 - 16)
        data[at:at + sector] = lvd
        break
    # the file set descriptor: the root directory through the metadata partition
    fsd_at = (start + volume.fsd.block) * sector
    fsd = bytearray(data[fsd_at:fsd_at + sector])
    fsd[408:410] = (1).to_bytes(2, "little")
    _retag(fsd)
    data[fsd_at:fsd_at + sector] = fsd
    # the root directory's file identifiers: their file entries through the metadata partition
    _, root_block = volume.root_directory()
    root = volume.read_file(0, root_block, 1 << 20)
    extents, _, embedded = volume._file_extents(0, root_block)
    assert embedded is None and len(extents) == 1, "unexpected pycdlib layout"
    directory_at = (start + extents[0].block) * sector
    at = 0
    for _ in file_identifiers(root):
        fid_length = 38 + int.from_bytes(data[directory_at + at + 36:directory_at + at + 38], "little") \
            + data[directory_at + at + 19]
        fid_length += -fid_length % 4
        fid = bytearray(data[directory_at + at:directory_at + at + fid_length])
        fid[28:30] = (1).to_bytes(2, "little")
        _retag(fid)
        data[directory_at + at:directory_at + at + fid_length] = fid
        at += fid_length
    return bytes(data)
