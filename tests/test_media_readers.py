"""The user-space disc readers (azprov.media.udf, azprov.media.iso9660) against discs built by
real tools, cross-checked with 7-Zip and udfinfo, and fuzzed (hypothesis): hostile bytes give
the file, None or DiscFormatError, never another exception, a hang or unbounded reads."""

from __future__ import annotations

import os
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azprov.media import iso9660, udf
from azprov.media.image import MAX_FILE_BYTES, MAX_READ_BYTES, MAX_READS, DiscFormatError, Image
from support import discs

OVF = discs.ovf_env()
SCALE = int(os.environ.get("AZPROV_FUZZ_SCALE", "1"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every kind of disc, built once: name -> image bytes."""
    made = {}
    for name, build in {
        "udf-bridge": lambda t: discs.genisoimage(t, OVF, "-udf", extra=40),
        "udf-bridge-rr-joliet": lambda t: discs.genisoimage(t, OVF, "-udf", "-R", "-J"),
        "iso-plain": lambda t: discs.genisoimage(t, OVF, extra=40),
        "iso-rock-ridge": lambda t: discs.genisoimage(t, OVF, "-R"),
        "iso-joliet": lambda t: discs.genisoimage(t, OVF, "-J"),
        "udf-only": lambda t: discs.udf_only(t, OVF),
        "udf-2.60": lambda t: discs.pycdlib_udf260(t, OVF),
    }.items():
        made[name] = build(tmp_path_factory.mktemp(name)).read_bytes()
    return made


@pytest.mark.parametrize("name", ["udf-bridge", "udf-bridge-rr-joliet", "udf-only", "udf-2.60"])
def test_udf_reader_reads_ovf_env_from_real_udf_discs(built, name, tmp_path):
    assert udf.read_ovf_env(Image(built[name])) == OVF
    image = tmp_path / "disc.img"
    image.write_bytes(built[name])
    assert discs.cross_check_7z(image) == OVF  # an independent reader agrees
    info = discs.udfinfo(image)
    assert info["blocksize"] == "2048" and info["numfiles"] >= "1"


@pytest.mark.parametrize("name", ["udf-bridge", "iso-plain", "iso-rock-ridge", "iso-joliet", "udf-2.60"])
def test_iso9660_reader_reads_ovf_env_from_real_iso_discs(built, name):
    assert iso9660.read_ovf_env(Image(built[name])) == OVF


def test_each_reader_refuses_the_other_format(built):
    with pytest.raises(DiscFormatError, match="anchor"):
        udf.read_ovf_env(Image(built["iso-plain"]))
    with pytest.raises(DiscFormatError, match="primary volume descriptor"):
        iso9660.read_ovf_env(Image(built["udf-only"]))


def test_a_disc_without_ovf_env_gives_none(tmp_path):
    other = discs.genisoimage(tmp_path, b"x", "-udf", "-R")
    data = bytearray(other.read_bytes())
    # rename the file on both file systems: ovf-env.xml -> ovf-xxx.xml
    renamed = bytes(data).replace(b"ovf-env.xml", b"ovf-xxx.xml").replace(b"OVF_ENV.XML", b"OVF_XXX.XML")
    renamed = renamed.replace("ovf-env.xml".encode("utf-16-be"), "ovf-xxx.xml".encode("utf-16-be"))
    assert iso9660.read_ovf_env(Image(renamed)) is None
    # UDF tags carry a CRC over the file identifier: the renamed one no longer matches
    with pytest.raises(DiscFormatError, match="CRC"):
        udf.read_ovf_env(Image(renamed))


@pytest.mark.parametrize("media,revision", [("hd", "1.02"), ("dvd", "1.50"), ("hd", "2.01"),
                                            ("dvdrw", "2.01"), ("cdrw", "2.01")])
def test_empty_udf_file_systems_from_mkudffs_have_no_ovf_env(tmp_path, media, revision):
    """mkudffs volumes (type 1 and sparable partitions, short and extended file entries)."""
    image = discs.mkudffs(tmp_path, media, revision)
    assert discs.udfinfo(image)["udfrev"] == revision
    assert udf.read_ovf_env(Image(image.read_bytes())) is None


@pytest.mark.parametrize("revision", ["1.50", "2.50", "2.60"])
def test_vat_discs_are_refused_so_the_caller_mounts_them(tmp_path, revision):
    """Incrementally written CD-R (a virtual partition) is not read in user space: honest refusal."""
    image = discs.mkudffs(tmp_path, "cdr", revision)
    with pytest.raises(DiscFormatError, match="virtual"):
        udf.read_ovf_env(Image(image.read_bytes()))


def test_a_file_over_the_limit_is_refused(tmp_path):
    big = discs.genisoimage(tmp_path, b" " * (MAX_FILE_BYTES + 1), "-udf")
    for reader in (udf, iso9660):
        with pytest.raises(DiscFormatError, match="limit"):
            reader.read_ovf_env(Image(big.read_bytes()))


def test_reads_come_from_a_descriptor_with_pread(built, tmp_path):
    path = tmp_path / "disc.img"
    path.write_bytes(built["udf-bridge"])
    fd = os.open(path, os.O_RDONLY)
    try:
        image = Image(fd)
        assert image.size == len(built["udf-bridge"])
        assert udf.read_ovf_env(image) == OVF
        assert image.reads < 40  # anchor, descriptors, FSD, root, file
    finally:
        os.close(fd)


def test_out_of_bounds_reads_and_too_many_reads_are_refused():
    image = Image(b"\0" * 4096)
    with pytest.raises(DiscFormatError, match="outside"):
        image.read(4000, 200)
    for _ in range(MAX_READS):
        image.read(0, 1)
    with pytest.raises(DiscFormatError, match="too many"):
        image.read(0, 1)


def _checked(reader, data: bytes):
    image = Image(data)
    try:
        result = reader.read_ovf_env(image)
    except DiscFormatError:
        result = None
    assert image.reads <= MAX_READS and image.bytes_read <= MAX_READ_BYTES
    assert result is None or len(result) <= MAX_FILE_BYTES
    return result


# The structures the readers walk: ISO descriptors and root directory (sectors 16-40), UDF
# volume descriptor sequences (32-64), the anchor (256) and the partition's first blocks.
_HOT_SECTORS = list(range(16, 70)) + list(range(256, 300))


@settings(max_examples=300 * SCALE, deadline=2000, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutated_real_discs(built, data):
    name = data.draw(st.sampled_from(sorted(built)))
    image = bytearray(built[name])
    for _ in range(data.draw(st.integers(1, 12))):
        sector = data.draw(st.sampled_from(_HOT_SECTORS))
        offset = sector * 2048 + data.draw(st.integers(0, 2047))
        if offset >= len(image):
            continue
        kind = data.draw(st.sampled_from(["byte", "u32", "u16"]))
        if kind == "byte":
            image[offset] = data.draw(st.integers(0, 255))
        elif offset + 4 <= len(image):
            value = data.draw(st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 256, 2048]))
            struct.pack_into("<I" if kind == "u32" else "<H", image, offset, value & (0xFFFFFFFF if kind == "u32" else 0xFFFF))
    if data.draw(st.booleans()):
        _retag(image)  # so the mutation gets past the tag checks into the structure logic
    for reader in (udf, iso9660):
        _checked(reader, bytes(image))


def _retag(image: bytearray) -> None:
    """Recompute the checksum and CRC of every UDF descriptor tag at the start of a hot block."""
    for sector in _HOT_SECTORS:
        at = sector * 2048
        if at + 16 > len(image) or struct.unpack_from("<H", image, at)[0] not in range(1, 267):
            continue
        crc_length = struct.unpack_from("<H", image, at + 10)[0]
        if at + 16 + crc_length <= len(image):
            struct.pack_into("<H", image, at + 8, udf.crc16(bytes(image[at + 16:at + 16 + crc_length])))
        image[at + 4] = (sum(image[at:at + 4]) + sum(image[at + 5:at + 16])) & 0xFF


def test_retagged_mutations_reach_the_structure_checks(built):
    """The fuzzer's _retag really gets mutations past the tag checks (else the fuzzing is shallow)."""
    image = bytearray(built["udf-bridge"])
    volume = udf.UdfVolume(Image(bytes(image)))
    fsd_sector = volume.physical_block(volume.fsd.partition, volume.fsd.block)
    struct.pack_into("<I", image, fsd_sector * 2048 + 404, 0x7FFFFFF0)  # root ICB past the partition
    with pytest.raises(DiscFormatError, match="CRC"):
        udf.read_ovf_env(Image(bytes(image)))
    _retag(image)
    with pytest.raises(DiscFormatError, match="past partition"):
        udf.read_ovf_env(Image(bytes(image)))


@settings(max_examples=200 * SCALE, deadline=1000, database=None)
@given(st.binary(max_size=4096), st.integers(0, 600))
def test_fuzz_random_bytes_at_the_structures(blob, sector):
    image = bytearray(600 * 2048)
    image[sector * 2048:sector * 2048 + len(blob)] = blob
    image[16 * 2048:16 * 2048 + 6] = b"\x01CD001"
    struct.pack_into("<H", image, 256 * 2048, 2)
    for reader in (udf, iso9660):
        _checked(reader, bytes(image[:600 * 2048]))


def test_memory_stays_bounded_on_a_hostile_disc(built):
    """Extents claiming gigabytes: the readers refuse before allocating."""
    image = bytearray(built["udf-bridge"])
    for sector in range(16, 300):
        block = image[sector * 2048:(sector + 1) * 2048]
        if block[1:6] == b"CD001":
            struct.pack_into("<I", image, sector * 2048 + 156 + 10, 0xFFFFFFFF)  # root dir length
    tracemalloc.start()
    try:
        for reader in (udf, iso9660):
            _checked(reader, bytes(image))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * len(image) + 4 * 1024 * 1024


def test_udf_metadata_partition_is_followed(built):
    """UDF 2.50+: the file set, the root directory and the file entries live in the metadata
    partition, whose blocks are found through the metadata file (see discs.with_metadata_partition)."""
    image = discs.with_metadata_partition(built["udf-2.60"])
    volume = udf.UdfVolume(Image(image))
    assert [m.kind for m in volume.maps] == ["physical", "metadata"]
    assert volume.fsd.partition == 1 and volume.metadata_extents
    assert volume.root_directory()[0] == 1
    assert udf.read_ovf_env(Image(image)) == OVF
    # the metadata file is really used: point it past the partition and reading fails
    broken = bytearray(image)
    meta_block = volume.metadata_extents[0]
    entry_sector = volume.partition_starts[0][0] + volume.maps[1].metadata_file
    struct.pack_into("<I", broken, entry_sector * 2048 + 180, 5)  # extent starts 5 blocks later
    discs._retag(memoryview(broken)[entry_sector * 2048:(entry_sector + 1) * 2048].cast("B"))
    assert meta_block.block == 0
    with pytest.raises(DiscFormatError):
        udf.read_ovf_env(Image(bytes(broken)))
