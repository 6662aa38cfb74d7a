"""Bounded, read-only access to a disc image: the one way the disc readers touch the bytes.

A disc is binary input to a root process, so every read names its offset and length, both are
checked against the image's size, and the number and total size of reads of one parse are capped:
a hostile image cannot make a reader loop for long, read far, or allocate much.
"""

from __future__ import annotations

import os
from typing import Optional

# ovf-env.xml with 64 KiB of custom data, base64, plus the rest: 1 MiB is far more than enough.
MAX_FILE_BYTES = 1024 * 1024
MAX_READS = 4096  # reads per parse (descriptors, directory blocks, file extents)
MAX_READ_BYTES = 16 * 1024 * 1024  # total bytes read per parse


class DiscFormatError(Exception):
    """The bytes are not a disc this reader can use (not the format, damaged, or out of bounds)."""


class Image:
    """Reads of a file or block device by descriptor (``pread``), or of ``bytes`` in memory."""

    def __init__(self, source, size: Optional[int] = None) -> None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._data: Optional[bytes] = bytes(source)
            self._fd = -1
            self.size = len(self._data)
        else:
            self._data = None
            self._fd = source
            self.size = size if size is not None else os.lseek(source, 0, os.SEEK_END)
        self.reads = 0
        self.bytes_read = 0

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise DiscFormatError(f"read of {length} bytes at {offset} is outside the "
                                  f"{self.size}-byte image")
        self.reads += 1
        self.bytes_read += length
        if self.reads > MAX_READS or self.bytes_read > MAX_READ_BYTES:
            raise DiscFormatError("the disc needs too many reads: refusing it")
        if self._data is not None:
            return self._data[offset:offset + length]
        chunks = []
        while length:
            chunk = os.pread(self._fd, length, offset)
            if not chunk:
                raise DiscFormatError(f"short read at {offset}")
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)


def u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "little")


def u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "little")


def u64(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 8], "little")


def is_ovf_env_name(name: str) -> bool:
    """``ovf-env.xml`` as a disc may spell it: any case, ``_`` for ``-``, an ISO ``;1`` version."""
    name = name.split(";", 1)[0].rstrip(".").lower()
    return name in ("ovf-env.xml", "ovf_env.xml")
