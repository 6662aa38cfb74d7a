"""A read-only UDF reader (1.02 to 2.60) that finds ``ovf-env.xml`` in the root directory.

The path through the disc: anchor (block 256, block sizes 512 to 4096) → volume descriptor
sequence (partition and logical volume descriptors) → file set descriptor → root directory's
(extended) file entry → file identifiers → the file's (extended) file entry → its data.

- Partition maps: type 1 (physical), sparable (read as physical: a pressed or never-rewritten disc
  has no remapped packets) and, for UDF 2.50+, the metadata partition, whose blocks are found
  through the metadata file's extents.  A virtual (VAT) partition, used by incrementally written
  CD-R, is refused with a clear error so the caller can fall back to mounting.
- Every descriptor's tag is checked (identifier, checksum, CRC, location, as the kernel does);
  every count, length and extent is bounded and checked against the image, allocation extent
  chains are capped, and only the root directory is read, so there is no depth to bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from azprov.media.image import (
    MAX_FILE_BYTES, DiscFormatError, Image, is_ovf_env_name, u16, u32, u64,
)

ANCHOR_BLOCK = 256
BLOCK_SIZES = (2048, 512, 1024, 4096)
MAX_VDS_DESCRIPTORS = 64
MAX_PARTITION_MAPS = 8
MAX_ALLOCATION_EXTENTS = 16  # chained allocation extent descriptors per file
MAX_EXTENTS = 256  # extents per file
MAX_DIRECTORY_BYTES = 1024 * 1024
MAX_METADATA_EXTENTS = 64

TAG_PVD, TAG_AVDP, TAG_VDP, TAG_PD, TAG_LVD, TAG_TD = 1, 2, 3, 5, 6, 8
TAG_FSD, TAG_FID, TAG_AED, TAG_FE, TAG_EFE = 256, 257, 258, 261, 266

# File characteristics of a file identifier descriptor.
_FID_DIRECTORY, _FID_DELETED, _FID_PARENT = 0x02, 0x04, 0x08


def _crc_table() -> Tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-ITU-T (polynomial 0x1021, initial 0), as ECMA-167 descriptor tags use."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def check_tag(block: bytes, expected: Tuple[int, ...], location: Optional[int]) -> int:
    """The tag identifier of the descriptor starting ``block``, if it is one of ``expected``,
    its checksum and CRC hold and it says it is at ``location`` (unless None); else
    DiscFormatError."""
    if len(block) < 16:
        raise DiscFormatError("descriptor tag is cut short")
    identifier = u16(block, 0)
    if identifier not in expected:
        raise DiscFormatError(f"descriptor {identifier} found where {expected} was expected")
    if sum(block[0:4]) + sum(block[5:16]) & 0xFF != block[4]:
        raise DiscFormatError(f"descriptor {identifier}: bad tag checksum")
    crc_length = u16(block, 10)
    if 16 + crc_length > len(block):
        raise DiscFormatError(f"descriptor {identifier}: CRC length {crc_length} is too long")
    if crc_length and crc16(block[16:16 + crc_length]) != u16(block, 8):
        raise DiscFormatError(f"descriptor {identifier}: bad CRC")
    if location is not None and u32(block, 12) != location:
        raise DiscFormatError(f"descriptor {identifier} says it is at {u32(block, 12)}, "
                              f"read at {location}")
    return identifier


@dataclass(frozen=True)
class Extent:
    partition: int  # partition reference number
    block: int  # logical block in that partition
    length: int  # bytes
    recorded: bool  # False: allocated or not, but reads as zeros


@dataclass(frozen=True)
class _Partition:
    kind: str  # "physical" or "metadata"
    number: int  # the partition descriptor's number this map refers to
    metadata_file: int = 0  # metadata: block of the metadata file in the physical partition


class UdfVolume:
    """One logical volume of a UDF image: block addressing through the partition maps."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.block_size, anchor = self._find_anchor()
        self.partition_starts: Dict[int, Tuple[int, int]] = {}  # number -> (start, length)
        self.maps: List[_Partition] = []
        self.metadata_extents: Optional[List[Extent]] = None
        self.fsd: Optional[Extent] = None
        self._read_volume_descriptors(anchor)
        self._load_metadata_partition()

    # ------------------------------------------------------------------ volume structure

    def _find_anchor(self) -> Tuple[int, bytes]:
        for size in BLOCK_SIZES:
            offset = ANCHOR_BLOCK * size
            if offset + size > self.image.size:
                continue
            block = self.image.read(offset, size)
            if u16(block, 0) != TAG_AVDP:
                continue
            try:
                check_tag(block, (TAG_AVDP,), ANCHOR_BLOCK)
            except DiscFormatError:
                continue
            return size, block
        raise DiscFormatError("no UDF anchor volume descriptor at block 256")

    def _sector(self, block: int) -> bytes:
        return self.image.read(block * self.block_size, self.block_size)

    def _read_volume_descriptors(self, anchor: bytes) -> None:
        errors = []
        for at in (16, 24):  # main, then reserve volume descriptor sequence
            length, location = u32(anchor, at), u32(anchor, at + 4)
            try:
                self._read_sequence(location, length)
                return
            except DiscFormatError as exc:
                errors.append(str(exc))
                self.partition_starts, self.maps, self.fsd = {}, [], None
        raise DiscFormatError("; ".join(errors))

    def _read_sequence(self, location: int, length: int) -> None:
        lvd = None
        count = min(length // self.block_size, MAX_VDS_DESCRIPTORS)
        for block_number in range(location, location + count):
            block = self._sector(block_number)
            tag = check_tag(block, tuple(range(1, 10)), block_number)
            if tag == TAG_TD:
                break
            if tag == TAG_PD:
                number = u16(block, 22)
                self.partition_starts.setdefault(number, (u32(block, 188), u32(block, 192)))
            elif tag == TAG_LVD and lvd is None:
                lvd = block
            elif tag == TAG_VDP:
                raise DiscFormatError("volume descriptor pointers (multi-session) are not supported")
        if lvd is None:
            raise DiscFormatError("no logical volume descriptor")
        if not self.partition_starts:
            raise DiscFormatError("no partition descriptor")
        self._read_logical_volume(lvd)

    def _read_logical_volume(self, lvd: bytes) -> None:
        if u32(lvd, 212) != self.block_size:
            raise DiscFormatError(f"logical block size {u32(lvd, 212)} differs from the "
                                  f"{self.block_size}-byte sectors")
        self.fsd = Extent(partition=u16(lvd, 256), block=u32(lvd, 252), length=u32(lvd, 248),
                          recorded=True)
        table_length, count = u32(lvd, 264), u32(lvd, 268)
        if count == 0 or count > MAX_PARTITION_MAPS or 440 + table_length > len(lvd):
            raise DiscFormatError(f"bad partition map table ({count} maps, {table_length} bytes)")
        table = lvd[440:440 + table_length]
        at = 0
        for _ in range(count):
            if at + 2 > len(table) or table[at + 1] < 6 or at + table[at + 1] > len(table):
                raise DiscFormatError("partition map runs past its table")
            kind, length = table[at], table[at + 1]
            entry = table[at:at + length]
            if kind == 1:
                self.maps.append(_Partition("physical", u16(entry, 4)))
            elif kind == 2 and length >= 64:
                ident = entry[5:28].rstrip(b"\0")
                if ident == b"*UDF Sparable Partition":
                    self.maps.append(_Partition("physical", u16(entry, 38)))
                elif ident == b"*UDF Metadata Partition":
                    self.maps.append(_Partition("metadata", u16(entry, 38), u32(entry, 40)))
                elif ident == b"*UDF Virtual Partition":
                    raise DiscFormatError("virtual (VAT) partitions are not supported")
                else:
                    raise DiscFormatError(f"unknown partition map {ident[:32]!r}")
            else:
                raise DiscFormatError(f"unknown partition map type {kind}")
            at += length

    def _load_metadata_partition(self) -> None:
        """Where the metadata partition's blocks are: the metadata file's extents, which must
        all lie in physical partitions (so block lookups never recurse)."""
        for entry in self.maps:
            if entry.kind != "metadata":
                continue
            physical = next((i for i, m in enumerate(self.maps)
                             if m.kind == "physical" and m.number == entry.number), None)
            if physical is None:
                raise DiscFormatError("metadata partition without its physical partition")
            extents, _length, embedded = self._file_extents(physical, entry.metadata_file)
            if embedded is not None or len(extents) > MAX_METADATA_EXTENTS:
                raise DiscFormatError("metadata file is embedded or has too many extents")
            if any(not 0 <= e.partition < len(self.maps) or self.maps[e.partition].kind != "physical"
                   for e in extents):
                raise DiscFormatError("metadata file extents must lie in a physical partition")
            self.metadata_extents = extents
            return

    # ------------------------------------------------------------------ addressing

    def physical_block(self, partition: int, block: int) -> int:
        """The sector of logical ``block`` in partition reference ``partition``."""
        if not 0 <= partition < len(self.maps):
            raise DiscFormatError(f"partition reference {partition} is not in the volume")
        entry = self.maps[partition]
        start, length = self.partition_starts.get(entry.number, (None, 0))
        if start is None:
            raise DiscFormatError(f"partition {entry.number} has no descriptor")
        if entry.kind == "metadata":
            if self.metadata_extents is None:
                raise DiscFormatError("metadata partition not loaded")
            per_block = self.block_size
            skip = block * per_block
            for extent in self.metadata_extents:
                if skip < extent.length:
                    if not extent.recorded:
                        raise DiscFormatError("metadata block is not recorded")
                    return self.physical_block(extent.partition, extent.block + skip // per_block)
                skip -= extent.length
            raise DiscFormatError(f"metadata block {block} is past the metadata file")
        if block >= length:
            raise DiscFormatError(f"block {block} is past partition {entry.number}")
        return start + block

    def read_block(self, partition: int, block: int, tags: Tuple[int, ...]) -> bytes:
        data = self._sector(self.physical_block(partition, block))
        check_tag(data, tags, block)
        return data

    # ------------------------------------------------------------------ files

    def _file_extents(self, partition: int,
                      block: int) -> Tuple[List[Extent], int, Optional[bytes]]:
        """The extents, information length and embedded data (or None) of the (extended) file
        entry at ``block``."""
        entry = self.read_block(partition, block, (TAG_FE, TAG_EFE))
        extended = u16(entry, 0) == TAG_EFE
        strategy, flags = u16(entry, 20), u16(entry, 34)
        if strategy not in (4, 4096):
            raise DiscFormatError(f"ICB strategy {strategy} is not supported")
        length = u64(entry, 56)
        ea_at, ad_at = (208, 212) if extended else (168, 172)
        start = (216 if extended else 176) + u32(entry, ea_at)
        ad_length = u32(entry, ad_at)
        if start + ad_length > len(entry):
            raise DiscFormatError("file entry allocation descriptors run past the block")
        descriptors = entry[start:start + ad_length]
        kind = flags & 7
        if kind == 3:  # data embedded in the entry
            return [], min(length, len(descriptors)), descriptors
        return self._allocation(descriptors, kind, partition), length, None

    def _allocation(self, data: bytes, kind: int, partition: int) -> List[Extent]:
        sizes = {0: 8, 1: 16, 2: 20}
        if kind not in sizes:
            raise DiscFormatError(f"allocation descriptor type {kind} is not supported")
        size = sizes[kind]
        extents: List[Extent] = []
        chained = 0
        while True:
            next_extent = None
            for at in range(0, len(data) - size + 1, size):
                raw_length = u32(data, at)
                extent_type, length = raw_length >> 30, raw_length & 0x3FFFFFFF
                if length == 0:
                    break
                if kind == 0:
                    where = (partition, u32(data, at + 4))
                elif kind == 1:
                    where = (u16(data, at + 8), u32(data, at + 4))
                else:
                    where = (u16(data, at + 16), u32(data, at + 12))
                if extent_type == 3:
                    next_extent = where
                    break
                extents.append(Extent(where[0], where[1], length, extent_type == 0))
                if len(extents) > MAX_EXTENTS:
                    raise DiscFormatError("file has too many extents")
            if next_extent is None:
                return extents
            chained += 1
            if chained > MAX_ALLOCATION_EXTENTS:
                raise DiscFormatError("allocation extent chain is too long")
            block = self.read_block(next_extent[0], next_extent[1], (TAG_AED,))
            ad_length = u32(block, 20)
            if 24 + ad_length > len(block):
                raise DiscFormatError("allocation extent descriptor runs past its block")
            partition = next_extent[0]
            data = block[24:24 + ad_length]

    def read_file(self, partition: int, block: int, limit: int) -> bytes:
        """The contents of the file whose (extended) file entry is at ``block``, at most ``limit``."""
        extents, length, embedded = self._file_extents(partition, block)
        if length > limit:
            raise DiscFormatError(f"file of {length} bytes is over the {limit}-byte limit")
        if embedded is not None:
            return embedded[:length]
        parts, remaining = [], length
        for extent in extents:
            if remaining <= 0:
                break
            take = min(extent.length, remaining)
            if not extent.recorded:
                parts.append(bytes(take))
            else:
                first = self.physical_block(extent.partition, extent.block)
                blocks = -(-take // self.block_size)
                # the extent must stay inside its partition: check its last block too
                self.physical_block(extent.partition, extent.block + blocks - 1)
                parts.append(self.image.read(first * self.block_size, take))
            remaining -= take
        if remaining > 0:
            raise DiscFormatError("file is shorter than its recorded length")
        return b"".join(parts)

    def root_directory(self) -> Tuple[int, int]:
        """(partition reference, block) of the root directory's file entry."""
        if self.fsd is None:
            raise DiscFormatError("no file set descriptor")
        fsd = self.read_block(self.fsd.partition, self.fsd.block, (TAG_FSD,))
        return u16(fsd, 408), u32(fsd, 404)


def _identifier(raw: bytes) -> str:
    """An OSTA compressed Unicode file identifier (8- or 16-bit; 254/255 as UDF 2.50+ allow)."""
    if not raw:
        return ""
    if raw[0] in (8, 254):
        return raw[1:].decode("latin-1")
    if raw[0] in (16, 255):
        return raw[1:len(raw) - (len(raw) - 1) % 2].decode("utf-16-be", "replace")
    raise DiscFormatError(f"file identifier compression {raw[0]} is not OSTA Unicode")


def file_identifiers(directory: bytes) -> List[Tuple[str, int, int, int]]:
    """(name, characteristics, partition, block) of each file identifier in a directory."""
    found = []
    at = 0
    while at + 38 <= len(directory):
        if u16(directory, at) != TAG_FID:
            raise DiscFormatError(f"directory byte {at}: not a file identifier descriptor")
        characteristics, name_length = directory[at + 18], directory[at + 19]
        impl_length = u16(directory, at + 36)
        end = at + 38 + impl_length + name_length
        if end > len(directory):
            raise DiscFormatError("file identifier runs past the directory")
        check_tag(directory[at:end + (-end % 4)], (TAG_FID,), None)
        name = _identifier(directory[at + 38 + impl_length:end])
        found.append((name, characteristics, u16(directory, at + 28), u32(directory, at + 24)))
        at = end + (-end % 4)
    return found


def read_ovf_env(image: Image) -> Optional[bytes]:
    """The bytes of ``ovf-env.xml`` in the root directory, or None when the disc has none.

    Raises DiscFormatError when the image is not UDF, is damaged, or uses what is not supported."""
    volume = UdfVolume(image)
    partition, block = volume.root_directory()
    directory = volume.read_file(partition, block, MAX_DIRECTORY_BYTES)
    for name, characteristics, file_partition, file_block in file_identifiers(directory):
        if characteristics & (_FID_DIRECTORY | _FID_DELETED | _FID_PARENT):
            continue
        if is_ovf_env_name(name):
            return volume.read_file(file_partition, file_block, MAX_FILE_BYTES)
    return None
