"""A read-only ISO9660 reader that finds ``ovf-env.xml`` in the root directory and nothing else.

Names come from Joliet (a supplementary descriptor with a UCS-2 escape) when present, else from
Rock Ridge ``NM`` entries, else the plain 8.3 name (``OVF_ENV.XML;1``).  Only the root directory is
read (so no depth to bound); its size, every record, the file's size and extent are checked against
the image (see :mod:`azprov.media.image` for the read caps).  Multi-extent and interleaved files
are refused: ``ovf-env.xml`` is small.
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

from azprov.media.image import MAX_FILE_BYTES, DiscFormatError, Image, is_ovf_env_name, u16, u32

SECTOR = 2048
FIRST_DESCRIPTOR = 16
MAX_DESCRIPTORS = 32
MAX_ROOT_BYTES = 256 * 1024
_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")
_MULTI_EXTENT = 0x80
_DIRECTORY = 0x02


def _root_records(image: Image) -> Tuple[Optional[bytes], Optional[bytes]]:
    """The root directory records of the primary and of a Joliet descriptor (None if absent)."""
    primary = joliet = None
    for index in range(MAX_DESCRIPTORS):
        offset = (FIRST_DESCRIPTOR + index) * SECTOR
        if offset + SECTOR > image.size:
            break
        descriptor = image.read(offset, SECTOR)
        if descriptor[1:6] != b"CD001":
            break
        kind = descriptor[0]
        if kind == 255:
            break
        if u16(descriptor, 128) != SECTOR:
            raise DiscFormatError(f"logical block size {u16(descriptor, 128)} is not {SECTOR}")
        if kind == 1 and primary is None:
            primary = descriptor[156:190]
        elif kind == 2 and joliet is None and descriptor[88:91] in _JOLIET_ESCAPES:
            joliet = descriptor[156:190]
    if primary is None:
        raise DiscFormatError("no ISO9660 primary volume descriptor")
    return primary, joliet


def _extent(record: bytes, image: Image, limit: int) -> Tuple[int, int]:
    lba, length = u32(record, 2), u32(record, 10)
    if length > limit:
        raise DiscFormatError(f"extent of {length} bytes is over the {limit}-byte limit")
    if lba * SECTOR + length > image.size:
        raise DiscFormatError(f"extent at block {lba} ({length} bytes) is outside the image")
    return lba, length


def _records(data: bytes) -> Iterator[bytes]:
    """The directory records of a directory's bytes (records never cross a sector boundary)."""
    at = 0
    while at < len(data):
        length = data[at]
        if length == 0:  # padding to the end of the sector
            at = (at // SECTOR + 1) * SECTOR
            continue
        if length < 34 or at + length > len(data) or 33 + data[at + 32] > length:
            raise DiscFormatError(f"bad directory record at byte {at} of the root directory")
        yield data[at:at + length]
        at += length


def _rock_ridge_name(record: bytes) -> Optional[str]:
    """The Rock Ridge ``NM`` name in the record's system use area (no continuation areas)."""
    name_length = record[32]
    at = 33 + name_length + (1 - name_length % 2)  # padding byte after an even-length name
    parts = []
    while at + 4 <= len(record):
        signature, length = record[at:at + 2], record[at + 2]
        if length < 4 or at + length > len(record):
            break
        if signature == b"NM" and length >= 5:
            parts.append(record[at + 5:at + length])
        at += length
    return b"".join(parts).decode("utf-8", "replace") if parts else None


def _name(record: bytes, joliet: bool) -> str:
    raw = record[33:33 + record[32]]
    if joliet:
        return raw.decode("utf-16-be", "replace")
    return _rock_ridge_name(record) or raw.decode("ascii", "replace")


def read_ovf_env(image: Image) -> Optional[bytes]:
    """The bytes of ``ovf-env.xml`` in the root directory, or None when the disc has none.

    Raises DiscFormatError when the image is not ISO9660 or is damaged."""
    primary, joliet = _root_records(image)
    for root, is_joliet in ((joliet, True), (primary, False)):
        if root is None:
            continue
        lba, length = _extent(root, image, MAX_ROOT_BYTES)
        for record in _records(image.read(lba * SECTOR, length)):
            if record[25] & _DIRECTORY or record[33:33 + record[32]] in (b"\0", b"\1"):
                continue
            if not is_ovf_env_name(_name(record, is_joliet)):
                continue
            if record[25] & _MULTI_EXTENT or record[26] or record[27]:
                raise DiscFormatError("ovf-env.xml is multi-extent or interleaved")
            file_lba, file_length = _extent(record, image, MAX_FILE_BYTES)
            return image.read(file_lba * SECTOR, file_length)
    return None
