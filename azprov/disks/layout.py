"""What a temporary disk holds, read in user space, and whether azprov may format it.

The verdicts (:class:`Verdict`):

- ``azure-ntfs``: the disk as Azure delivers it, the one case of a disk with content that may be
  formatted.  What Azure delivers was checked against the anchors: cloud-init's
  ``can_dev_be_reformatted`` (``cloudinit/sources/DataSourceAzure.py``: a dos or gpt partition
  table, one NTFS partition, or two on GPT disks larger than 2 TB whose first is the Microsoft
  reserved partition; no files but ``dataloss_warning_readme.txt`` and ``system volume
  information``, compared case-insensitively) and azure-vm-utils' ``azure-ephemeral-disk-setup``
  (one NTFS partition labelled ``Temporary Storage``, the same two names).  azprov asks for all of
  it: the partition table, the label, and only those two names besides NTFS's own metadata files
  (MFT records below 16), the first a file and the second a directory.
- ``blank``: no partition table and nothing but zeros in the first and last MiB: a raw NVMe temp
  disk (azure-vm-utils formats those when ``blkid`` and ``parted`` find nothing).  The zero test
  covers the signatures that sit at either end (GPT and its backup, MBR, md 0.90/1.0 and 1.2,
  LVM, LUKS, swap, ZFS labels, every filesystem's superblock).
- ``ours``: a filesystem azprov made on an earlier boot of this VM (whole disk, ext4 or XFS,
  label :data:`LABEL`): mounted again, never formatted (a reboot keeps the temporary disk).
- ``in-use-ntfs``: Azure's NTFS volume with other files: left alone.
- ``unknown``: anything else (another filesystem, a partition table azprov does not recognise,
  a volume it cannot read): left alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import List, Optional, Tuple

from azprov.disks import ntfs
from azprov.media.image import DiscFormatError, Image, u16, u32, u64

LABEL = "azprov-temp"  # the filesystem label of the temporary disk azprov formatted
AZURE_LABEL = "Temporary Storage"
AZURE_FILES = {"dataloss_warning_readme.txt": False, "system volume information": True}  # name -> directory
EDGE = 1024 * 1024  # bytes read at each end of the disk
MBR_NTFS = 0x07
MBR_PROTECTIVE = 0xEE
GPT_BASIC_DATA = uuid.UUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7")
GPT_MS_RESERVED = uuid.UUID("e3c9e316-0b5c-4db8-817d-f92df00215ae")

FORMAT = ("azure-ntfs", "blank")  # the verdicts that let azprov format the disk


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    kind: str  # "mbr:07", "gpt:<type guid>"


@dataclass(frozen=True)
class Verdict:
    kind: str  # azure-ntfs, blank, ours, in-use-ntfs, unknown
    reason: str  # what was found, for the log and `azprov status`
    filesystem: Optional[str] = None  # for "ours": ext4 or xfs

    @property
    def may_format(self) -> bool:
        return self.kind in FORMAT


def mbr_partitions(sector0: bytes, sector: int) -> Optional[List[Partition]]:
    """The primary partitions of a DOS partition table, or None if sector 0 is not one."""
    if sector0[510:512] != b"\x55\xaa" or ntfs.is_ntfs(sector0):
        return None
    found = []
    for index in range(4):
        entry = sector0[446 + 16 * index:462 + 16 * index]
        if entry[0] not in (0x00, 0x80):
            return None  # not a partition table (a boot sector of something else)
        if entry[4]:
            found.append(Partition(index + 1, u32(entry, 8) * sector, u32(entry, 12) * sector, f"mbr:{entry[4]:02x}"))
    return found


def gpt_partitions(head: bytes, sector: int) -> Optional[List[Partition]]:
    """The partitions of a GPT whose header and entries lie in ``head``, or None."""
    header = head[sector:sector + 92]
    if header[:8] != b"EFI PART":
        return None
    first, count, size = u64(header, 72), u32(header, 80), u32(header, 84)
    if size < 128 or count > 1024 or (first * sector + count * size) > len(head):
        return None
    found = []
    for index in range(count):
        entry = head[first * sector + index * size:first * sector + (index + 1) * size]
        kind = uuid.UUID(bytes_le=bytes(entry[:16]))
        if kind.int:
            start, last = u64(entry, 32), u64(entry, 40)
            found.append(Partition(index + 1, start * sector, (last - start + 1) * sector, f"gpt:{kind}"))
    return found


def own_filesystem(head: bytes) -> Optional[Tuple[str, str]]:
    """``(type, label)`` of an ext2/3/4 or XFS filesystem starting at byte 0, else None."""
    if len(head) >= 2048 and u16(head, 1024 + 56) == 0xEF53:
        return "ext4", head[1024 + 120:1024 + 136].split(b"\0", 1)[0].decode("utf-8", "replace")
    if head[:4] == b"XFSB":
        return "xfs", head[108:120].split(b"\0", 1)[0].decode("utf-8", "replace")
    return None


def _azure_ntfs(image: Image, partition: Partition) -> Verdict:
    where = f"partition {partition.number}"
    try:
        volume = ntfs.read_volume(image, partition.start, partition.size)
    except ntfs.NtfsError as exc:
        return Verdict("unknown", f"{where} is not an NTFS volume azprov can read ({exc})")
    if volume.label != AZURE_LABEL:
        return Verdict("unknown", f"{where} is an NTFS volume labelled {volume.label!r}, not {AZURE_LABEL!r}")
    others = [entry.name for entry in volume.entries if entry.record >= ntfs.FIRST_USER_RECORD
              and AZURE_FILES.get(entry.name.lower()) is not entry.directory]
    if others:
        shown = ", ".join(sorted(others)[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        return Verdict("in-use-ntfs", f"the NTFS volume {AZURE_LABEL!r} holds files besides the data loss "
                       f"warning: {shown}")
    return Verdict("azure-ntfs", f"an NTFS volume {AZURE_LABEL!r} on {where} holding only what Azure puts there")


def classify(image: Image, sector: int = 512) -> Verdict:
    """What the whole disk in ``image`` (logical sector size ``sector``) holds."""
    try:
        if image.size < 2 * EDGE:
            return Verdict("unknown", f"the disk is only {image.size} bytes")
        head, tail = image.read(0, EDGE), image.read(image.size - EDGE, EDGE)
        if not any(head) and not any(tail):
            return Verdict("blank", "no partition table, no filesystem: zeros at both ends")
        own = own_filesystem(head)
        if own is not None:
            kind, label = own
            if label == LABEL:
                return Verdict("ours", f"the {kind} filesystem {LABEL!r} azprov made", filesystem=kind)
            return Verdict("unknown", f"an {kind} filesystem labelled {label!r} that azprov did not make")
        mbr = mbr_partitions(head[:512], sector)
        if mbr is not None and any(p.kind == f"mbr:{MBR_PROTECTIVE:02x}" for p in mbr):
            gpt = gpt_partitions(head, sector)
            if gpt is None:
                return Verdict("unknown", "a protective MBR without a GPT azprov can read")
            wanted = [f"gpt:{GPT_BASIC_DATA}"] if len(gpt) == 1 else [f"gpt:{GPT_MS_RESERVED}", f"gpt:{GPT_BASIC_DATA}"]
            if [p.kind for p in gpt] != wanted:
                return Verdict("unknown", f"a GPT with {len(gpt)} partition(s) of types "
                               f"{', '.join(p.kind[4:] for p in gpt) or 'none'}, not Azure's")
            return _azure_ntfs(image, gpt[-1])
        if mbr is not None:
            if [p.kind for p in mbr] != [f"mbr:{MBR_NTFS:02x}"]:
                return Verdict("unknown", f"a DOS partition table with {len(mbr)} partition(s) of types "
                               f"{', '.join(p.kind[4:] for p in mbr) or 'none'}, not Azure's one NTFS partition")
            return _azure_ntfs(image, mbr[0])
        return Verdict("unknown", "data azprov does not recognise (no partition table, not blank)")
    except DiscFormatError as exc:
        return Verdict("unknown", f"cannot read the disk: {exc}")
