"""A read-only NTFS reader that knows two things: the volume label and the names in the root
directory.  That is all it takes to tell the temporary disk as Azure delivers it (a volume
"Temporary Storage" holding ``DATALOSS_WARNING_README.txt`` and perhaps ``System Volume
Information``) from one somebody used.

Why a reader of its own rather than mounting or ntfs-3g's ``ntfsls``: the decision must be made
on every image, and many have neither an ``ntfs``/``ntfs3`` kernel driver (RHEL 9, this project's
CI kernel) nor ntfs-3g (not in RHEL's base repositories).  cloud-init and azure-vm-utils,
when they cannot mount NTFS, *assume the disk is empty and format it*; azprov must never do that.
Reading in user space also keeps an untrusted volume away from a kernel filesystem driver.  The
tests check this reader against ntfs-3g's own tools on volumes made by ``mkntfs``.

Layout (the NTFS on-disk format as documented by the Linux-NTFS project and used by ntfs-3g):
the boot sector gives the sector and cluster sizes, the first cluster of the MFT and the size of
an MFT record and an index block; MFT record 0 (``$MFT``) maps the MFT itself (its ``$DATA``
runlist), record 3 (``$Volume``) holds the label, record 5 is the root directory, whose
``$I30`` index lives in ``$INDEX_ROOT`` and, when larger, in ``$INDEX_ALLOCATION`` blocks
(``INDX``) marked in use by its ``$BITMAP``.  Records and index blocks carry an update sequence
(fixups) in the last two bytes of every 512-byte stride.

Every read goes through :class:`azprov.media.image.Image` (offsets checked, reads capped); any
inconsistency is an :class:`NtfsError`, which the caller treats as "cannot tell": the disk is
then left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from azprov.media.image import DiscFormatError, Image, u16, u32, u64

MFT_RECORD_VOLUME = 3
MFT_RECORD_ROOT = 5
FIRST_USER_RECORD = 16  # records 0-15 are the metadata files ($MFT ... $Extend) and reserved
ATTR_ATTRIBUTE_LIST = 0x20
ATTR_FILE_NAME = 0x30
ATTR_VOLUME_NAME = 0x60
ATTR_DATA = 0x80
ATTR_INDEX_ROOT = 0x90
ATTR_INDEX_ALLOCATION = 0xA0
ATTR_BITMAP = 0xB0
ATTR_END = 0xFFFFFFFF
FILE_NAME_DOS = 2  # an 8.3 alias of a long name listed on its own
FILE_ATTR_DIRECTORY = 0x10000000  # in a FILE_NAME: the file has a $I30 index
INDEX_ENTRY_SUBNODE = 0x01
INDEX_ENTRY_LAST = 0x02
MAX_INDEX_BLOCKS = 256
MAX_ENTRIES = 4096


class NtfsError(Exception):
    """Not an NTFS volume this reader can read (not NTFS, damaged, or beyond its limits)."""


@dataclass(frozen=True)
class RootEntry:
    name: str
    record: int  # its MFT record number
    directory: bool
    size: int  # the data size the directory index records for it


@dataclass(frozen=True)
class NtfsVolume:
    label: str
    entries: Tuple[RootEntry, ...]  # the root directory's names (8.3 aliases left out)


@dataclass(frozen=True)
class _Attribute:
    type: int
    name: str
    resident: bool
    value: bytes  # a resident attribute's value
    data_size: int
    runs: Tuple[Tuple[int, int, int], ...] = ()  # a non-resident one's runs (see _runlist)


def is_ntfs(boot_sector: bytes) -> bool:
    return len(boot_sector) >= 512 and boot_sector[3:11] == b"NTFS    " and boot_sector[510:512] == b"\x55\xaa"


def _size_field(value: int, cluster: int) -> int:
    """An MFT record or index block size: clusters if positive, else 2**-value bytes."""
    signed = value - 256 if value > 127 else value
    return signed * cluster if signed > 0 else 1 << -signed if -signed < 31 else 0


def _fixups(block: bytes, magic: bytes) -> bytes:
    if block[:4] != magic:
        raise NtfsError(f"expected a {magic.decode()} record")
    offset, count = u16(block, 4), u16(block, 6)
    if count < 2 or (count - 1) * 512 != len(block) or offset + 2 * count > len(block):
        raise NtfsError("bad update sequence")
    data = bytearray(block)
    sequence = block[offset:offset + 2]
    for index in range(1, count):
        end = index * 512
        if data[end - 2:end] != sequence:
            raise NtfsError("torn record: update sequence mismatch")
        data[end - 2:end] = block[offset + 2 * index:offset + 2 * index + 2]
    return bytes(data)


def _attributes(record: bytes) -> List[_Attribute]:
    if not u16(record, 22) & 0x01:
        raise NtfsError("MFT record not in use")
    found = []
    offset, used = u16(record, 20), min(u32(record, 24), len(record))
    while offset + 8 <= used:
        kind, length = u32(record, offset), u32(record, offset + 4)
        if kind == ATTR_END:
            return found
        if length < 16 or length % 8 or offset + length > used:
            raise NtfsError("bad attribute length")
        attribute = record[offset:offset + length]
        name_length, name_offset = attribute[9], u16(attribute, 10)
        if name_offset + 2 * name_length > length:
            raise NtfsError("bad attribute name")
        name = attribute[name_offset:name_offset + 2 * name_length].decode("utf-16-le", "replace")
        if attribute[8] == 0:
            size, at = u32(attribute, 16), u16(attribute, 20)
            if at + size > length:
                raise NtfsError("bad resident attribute")
            found.append(_Attribute(kind, name, True, attribute[at:at + size], size))
        else:
            if length < 64:
                raise NtfsError("bad non-resident attribute")
            runs = u16(attribute, 32)
            if runs >= length:
                raise NtfsError("bad runlist offset")
            found.append(_Attribute(kind, name, False, b"", u64(attribute, 48),
                                    tuple(_runlist(attribute[runs:], u64(attribute, 16)))))
        offset += length
    raise NtfsError("attribute list has no end marker")


def _runlist(data: bytes, vcn: int = 0) -> List[Tuple[int, int, int]]:
    """``(first VCN, first LCN or -1 when sparse, clusters)`` of each run of the mapping pairs in
    ``data`` (an extent of an attribute, starting at ``vcn``)."""
    runs, lcn, at = [], 0, 0
    while at < len(data) and data[at]:
        header = data[at]
        length_size, offset_size = header & 0x0F, header >> 4
        if not 1 <= length_size <= 8 or offset_size > 8 or at + 1 + length_size + offset_size > len(data):
            raise NtfsError("bad runlist")
        count = int.from_bytes(data[at + 1:at + 1 + length_size], "little")
        start = at + 1 + length_size
        if offset_size:
            lcn += int.from_bytes(data[start:start + offset_size], "little", signed=True)
            if lcn < 0:
                raise NtfsError("bad runlist")
        if count <= 0 or len(runs) > 1024:
            raise NtfsError("bad runlist")
        runs.append((vcn, lcn if offset_size else -1, count))
        vcn += count
        at = start + offset_size
    return runs


class _Volume:
    def __init__(self, image: Image, base: int, length: int) -> None:
        self.image, self.base, self.length = image, base, length
        boot = self.read(0, 512)
        if not is_ntfs(boot):
            raise NtfsError("no NTFS boot sector")
        sector = u16(boot, 11)
        per_cluster = boot[13] if boot[13] <= 0x80 else 1 << (256 - boot[13])
        if sector not in (256, 512, 1024, 2048, 4096) or per_cluster & (per_cluster - 1) or not per_cluster:
            raise NtfsError("bad sector or cluster size")
        self.cluster = sector * per_cluster
        if self.cluster > 2 * 1024 * 1024:
            raise NtfsError("cluster size too large")
        self.record_size = _size_field(boot[64], self.cluster)
        if self.record_size not in (512, 1024, 2048, 4096):
            raise NtfsError("bad MFT record size")
        self.mft_runs = [(0, u64(boot, 48), 1 << 40)]  # until $MFT's own runlist is read
        mft_data = self.attribute(self.record(0), ATTR_DATA, "")
        if mft_data is None or mft_data.resident:
            raise NtfsError("$MFT has no data runlist")
        self.mft_runs = list(mft_data.runs)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.length:
            raise NtfsError("read beyond the volume")
        try:
            return self.image.read(self.base + offset, length)
        except DiscFormatError as exc:
            raise NtfsError(str(exc)) from None

    def read_runs(self, runs: List[Tuple[int, int, int]], offset: int, length: int) -> bytes:
        """``length`` bytes at byte ``offset`` of the stream the runs map (sparse: zeros)."""
        pieces = []
        while length > 0:
            vcn, within = divmod(offset, self.cluster)
            run = next((r for r in runs if r[0] <= vcn < r[0] + r[2]), None)
            if run is None:
                raise NtfsError("read beyond the runlist")
            take = min(length, (run[0] + run[2] - vcn) * self.cluster - within)
            if run[1] < 0:
                pieces.append(bytes(take))
            else:
                pieces.append(self.read((run[1] + vcn - run[0]) * self.cluster + within, take))
            offset += take
            length -= take
        return b"".join(pieces)

    def _raw_record(self, number: int) -> bytes:
        raw = self.read_runs(self.mft_runs, number * self.record_size, self.record_size)
        return _fixups(raw, b"FILE")

    def record(self, number: int) -> List[_Attribute]:
        """The attributes of file ``number``, those its attribute list keeps in extension
        records included (a non-resident attribute's extents joined into one)."""
        attributes = _attributes(self._raw_record(number))
        listed = self.attribute(attributes, ATTR_ATTRIBUTE_LIST, "")
        if listed is None:
            return attributes
        data = self.stream(listed, 256 * 1024)
        extensions, at = [], 0
        while at + 26 <= len(data):
            length = u16(data, at + 4)
            if length < 26 or at + length > len(data):
                raise NtfsError("bad attribute list entry")
            record = u64(data, at + 16) & 0xFFFFFFFFFFFF
            if record != number and record not in extensions:
                extensions.append(record)
            at += length
        if len(extensions) > 64:
            raise NtfsError("too many extension records")
        for extension in extensions:
            raw = self._raw_record(extension)
            if u64(raw, 32) & 0xFFFFFFFFFFFF != number:
                raise NtfsError(f"MFT record {extension} does not extend record {number}")
            attributes.extend(_attributes(raw))
        joined: List[_Attribute] = []
        for attribute in attributes:
            same = next((a for a in joined if (a.type, a.name) == (attribute.type, attribute.name)
                         and not a.resident and not attribute.resident), None)
            if same is None:
                joined.append(attribute)
                continue
            first = same if same.runs and same.runs[0][0] == 0 else attribute
            joined[joined.index(same)] = _Attribute(same.type, same.name, False, b"", first.data_size,
                                                    tuple(sorted(same.runs + attribute.runs)))
        return joined

    @staticmethod
    def attribute(attributes: List[_Attribute], kind: int, name: str) -> Optional[_Attribute]:
        return next((a for a in attributes if a.type == kind and a.name == name), None)

    def stream(self, attribute: _Attribute, limit: int) -> bytes:
        if attribute.resident:
            return attribute.value
        if attribute.data_size > limit:
            raise NtfsError("attribute too large")
        return self.read_runs(list(attribute.runs), 0, attribute.data_size)


def _entries(data: bytes, start: int, end: int, into: List[RootEntry]) -> None:
    """Parse the index entries in ``data[start:end]`` into ``into``."""
    at = start
    if not 0 <= start <= end <= len(data):
        raise NtfsError("bad index header")
    while at + 16 <= end:
        reference, length, key_length, flags = u64(data, at), u16(data, at + 8), u16(data, at + 10), u16(data, at + 12)
        if length < 16 or length % 8 or at + length > end:
            raise NtfsError("bad index entry")
        if flags & INDEX_ENTRY_LAST:
            return
        if key_length < 66 or 16 + key_length > length:
            raise NtfsError("bad index key")
        key = data[at + 16:at + 16 + key_length]
        name_length, namespace = key[64], key[65]
        if 66 + 2 * name_length > key_length:
            raise NtfsError("bad file name")
        if namespace != FILE_NAME_DOS:
            name = key[66:66 + 2 * name_length].decode("utf-16-le", "replace")
            into.append(RootEntry(name, reference & 0xFFFFFFFFFFFF, bool(u32(key, 56) & FILE_ATTR_DIRECTORY),
                                  u64(key, 48)))
            if len(into) > MAX_ENTRIES:
                raise NtfsError("too many entries in the root directory")
        at += length
    raise NtfsError("index entries have no end marker")


def read_volume(image: Image, base: int = 0, length: Optional[int] = None) -> NtfsVolume:
    """The label and root directory of the NTFS volume at ``base`` (``length`` bytes) of ``image``."""
    volume = _Volume(image, base, image.size - base if length is None else length)
    name = volume.attribute(volume.record(MFT_RECORD_VOLUME), ATTR_VOLUME_NAME, "")
    label = name.value.decode("utf-16-le", "replace") if name is not None else ""
    root = volume.record(MFT_RECORD_ROOT)
    index_root = volume.attribute(root, ATTR_INDEX_ROOT, "$I30")
    if index_root is None or not index_root.resident or len(index_root.value) < 32:
        raise NtfsError("the root directory has no index")
    value = index_root.value
    block_size = u32(value, 8)
    entries: List[RootEntry] = []
    _entries(value, 16 + u32(value, 16), 16 + u32(value, 20), entries)
    allocation = volume.attribute(root, ATTR_INDEX_ALLOCATION, "$I30")
    if allocation is None and value[28] & 0x01:  # "large index" without its blocks
        raise NtfsError("the root directory index has no allocation")
    if allocation is not None:
        if allocation.resident or block_size not in (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
            raise NtfsError("bad index allocation")
        blocks = allocation.data_size // block_size
        if blocks > MAX_INDEX_BLOCKS:
            raise NtfsError("the root directory index is too large")
        bitmap_attribute = volume.attribute(root, ATTR_BITMAP, "$I30")
        bitmap = volume.stream(bitmap_attribute, 4096) if bitmap_attribute is not None else b"\xff" * 32
        runs = list(allocation.runs)
        for number in range(blocks):
            if number // 8 >= len(bitmap) or not bitmap[number // 8] & (1 << number % 8):
                continue
            block = _fixups(volume.read_runs(runs, number * block_size, block_size), b"INDX")
            header = 24
            _entries(block, header + u32(block, header), header + u32(block, header + 4), entries)
    return NtfsVolume(label, tuple(entries))
