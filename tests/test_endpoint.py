import datetime
import logging
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azprov.endpoint import (
    DEFAULT_WIRESERVER,
    LEASE_SIZE_LIMIT,
    SOURCE_DEFAULT,
    SOURCE_EXPLICIT,
    Endpoint,
    discover_wireserver,
    parse_dhclient_leases,
    parse_dhcpcd_lease,
    parse_networkd_lease,
)

DATA = Path(__file__).parent / "data" / "leases"
NOW = datetime.datetime(2024, 5, 6, 12, 0, 0, tzinfo=datetime.timezone.utc)


def dhcp_packet(options: bytes, cookie: bytes = b"\x63\x82\x53\x63", end: bool = True) -> bytes:
    """A DHCPACK as dhcpcd stores it: BOOTP header, magic cookie, options, end option."""
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        2, 1, 6, 0,  # op=BOOTREPLY, htype=ethernet, hlen, hops
        0x3903F326, 0, 0,  # xid, secs, flags
        bytes(4), bytes([10, 0, 0, 4]), bytes([168, 63, 129, 16]), bytes(4),  # ci/yi/si/giaddr
        bytes.fromhex("000d3a1b2c3d") + bytes(10),  # chaddr
        bytes(64), bytes(128),  # sname, file
    )
    assert len(header) == 236
    return header + cookie + options + (b"\xff" if end else b"")


def option(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


AZURE_OPTIONS = (
    option(53, b"\x05")
    + option(54, bytes([168, 63, 129, 16]))
    + option(51, b"\xff\xff\xff\xff")
    + option(1, bytes([255, 255, 255, 0]))
    + option(3, bytes([10, 0, 0, 1]))
    + option(15, b"reddog.microsoft.com")
    + option(245, bytes([168, 63, 129, 16]))
    + b"\xff"
)


def lease_block(value: str = "a8:3f:81:10", expire: str = "never") -> str:
    return (
        "lease {\n"
        '  interface "eth0";\n'
        "  fixed-address 10.0.0.4;\n"
        f"  option unknown-245 {value};\n"
        '  option domain-name "reddog.microsoft.com";\n'
        f"  expire {expire};\n"
        "}\n"
    )


def write(root: Path, relative: str, data, mtime: float = 1_700_000_000) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


# ---------------------------------------------------------------------------------- networkd


def test_networkd_real_lease():
    assert parse_networkd_lease((DATA / "networkd-2").read_text()) == "168.63.129.16"


@pytest.mark.parametrize(
    "text",
    ["", "ADDRESS=10.0.0.4\n", "OPTION_245=a83f81\n", "OPTION_245=zz3f8110\n", "XOPTION_245=a83f8110"],
)
def test_networkd_without_usable_option(text):
    assert parse_networkd_lease(text) is None


def test_networkd_upper_case_hex_and_quotes():
    assert parse_networkd_lease('OPTION_245="0A0B0C0D"\n') == "10.11.12.13"


# ---------------------------------------------------------------------------------- dhclient


def test_dhclient_real_lease():
    text = (DATA / "dhclient.eth0.leases").read_text()
    assert parse_dhclient_leases(text, NOW) == "168.63.129.16"


def test_dhclient_single_hex_digits():
    assert parse_dhclient_leases(lease_block("a8:3f:81:a"), NOW) == "168.63.129.10"
    assert parse_dhclient_leases(lease_block("a:0:0:4"), NOW) == "10.0.0.4"


def test_dhclient_quoted_printable_value():
    # dhclient prints an unknown option as a string when every byte is printable
    assert parse_dhclient_leases(lease_block('"ABCD"'), NOW) == "65.66.67.68"
    assert parse_dhclient_leases(lease_block(r'"A\102\"D"'), NOW) == "65.66.34.68"


def test_dhclient_last_unexpired_block_wins():
    text = (
        lease_block("a:0:0:1", "1 2024/05/07 00:00:00")
        + lease_block("a:0:0:2", "never")
        + lease_block("a:0:0:3", "1 2024/05/06 11:59:59")  # expired a second ago
    )
    assert parse_dhclient_leases(text, NOW) == "10.0.0.2"


def test_dhclient_later_valid_block_wins():
    text = lease_block("a:0:0:1", "never") + lease_block("a:0:0:2", "2 2030/01/01 00:00:00")
    assert parse_dhclient_leases(text, NOW) == "10.0.0.2"


def test_dhclient_all_expired():
    text = lease_block("a:0:0:1", "1 2020/01/01 00:00:00") + lease_block("a:0:0:2", "epoch 1")
    assert parse_dhclient_leases(text, NOW) is None


def test_dhclient_epoch_expiry_and_naive_now():
    text = lease_block("a:0:0:1", "epoch 1714996800; # Mon May 06 12:00:00 2024")
    assert parse_dhclient_leases(text, NOW - datetime.timedelta(seconds=1)) == "10.0.0.1"
    assert parse_dhclient_leases(text, NOW) is None
    assert parse_dhclient_leases(text, datetime.datetime(2024, 5, 6, 11, 0)) == "10.0.0.1"


def test_dhclient_block_without_option_does_not_hide_earlier_one():
    text = lease_block("a:0:0:1") + "lease {\n  fixed-address 10.0.0.9;\n  expire never;\n}\n"
    assert parse_dhclient_leases(text, NOW) == "10.0.0.1"


@pytest.mark.parametrize(
    "value",
    ["a8:3f:81", "a8:3f:81:10:01", "a8:3f:81:1000", "a8:3g:81:10", '"ABC"', "a8::81:10"],
)
def test_dhclient_wrong_length_or_garbage_value(value):
    assert parse_dhclient_leases(lease_block(value), NOW) is None


def test_dhclient_unreadable_expiry_ignores_block():
    assert parse_dhclient_leases(lease_block(expire="sometime soon"), NOW) is None
    assert parse_dhclient_leases(lease_block(expire="1 2024/13/45 00:00:00"), NOW) is None


def test_dhclient_lease6_and_other_blocks_are_ignored():
    text = (
        'default-duid "\\000\\001";\n'
        "lease6 {\n  option unknown-245 a:0:0:1;\n}\n"
        "alias {\n  option unknown-245 a:0:0:2;\n}\n"
    )
    assert parse_dhclient_leases(text, NOW) is None


@pytest.mark.parametrize(
    "text",
    [
        lease_block()[:-3],  # truncated mid-block: never closed
        'lease { option domain-name "unterminated; option unknown-245 a8:3f:81:10; }',
        "}}} lease {",
        "\x00\xff" * 100,
    ],
)
def test_dhclient_malformed(text):
    assert parse_dhclient_leases(text, NOW) is None


def test_dhclient_braces_and_semicolons_in_strings():
    text = 'lease {\n  option domain-name "a;b}c{";\n  option unknown-245 a:0:0:7;\n}\n'
    assert parse_dhclient_leases(text, NOW) == "10.0.0.7"


# ---------------------------------------------------------------------------------- dhcpcd


def test_dhcpcd_real_packet():
    assert parse_dhcpcd_lease(dhcp_packet(AZURE_OPTIONS)) == "168.63.129.16"


def test_dhcpcd_pad_is_skipped_and_a_missing_end_option_is_a_cut_short_file():
    assert parse_dhcpcd_lease(dhcp_packet(b"\x00\x00" + option(245, b"\x0a\x00\x00\x04"))) == "10.0.0.4"
    assert parse_dhcpcd_lease(dhcp_packet(option(245, b"\x0a\x00\x00\x04"), end=False)) is None


def test_dhcpcd_split_option_is_concatenated():
    assert parse_dhcpcd_lease(dhcp_packet(option(245, b"\x0a\x00") + option(245, b"\x00\x05"))) == "10.0.0.5"


def test_dhcpcd_options_after_end_are_ignored():
    assert parse_dhcpcd_lease(dhcp_packet(b"\xff" + option(245, b"\x0a\x00\x00\x04"))) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 239,
        dhcp_packet(AZURE_OPTIONS, cookie=b"\x00\x00\x00\x00"),
        dhcp_packet(option(245, b"\x0a\x00\x00")),  # wrong length
        dhcp_packet(option(245, b"\x0a\x00\x00\x04\x05")),
        dhcp_packet(option(53, b"\x05") + b"\xf5\x04\x0a\x00"),  # truncated value
        dhcp_packet(b"\xf5"),  # truncated length
        dhcp_packet(option(53, b"\x05")),  # no option 245
    ],
)
def test_dhcpcd_bad_packets(data):
    assert parse_dhcpcd_lease(data) is None


# ---------------------------------------------------------------------------------- parsers never crash


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_dhcpcd_parser_never_raises(data):
    parse_dhcpcd_lease(dhcp_packet(data))
    parse_dhcpcd_lease(data)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('lease{};"\\ #\n:a8f0expirenvoptunknow-245/ ')), max_size=300))
def test_dhclient_parser_never_raises(text):
    parse_dhclient_leases(text, NOW)
    parse_networkd_lease(text)


# ---------------------------------------------------------------------------------- discovery


def test_explicit_wins_and_is_not_validated(tmp_path):
    write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=0a000004\n")
    assert discover_wireserver("127.0.0.1:8080", root=str(tmp_path)) == Endpoint(
        "127.0.0.1:8080", SOURCE_EXPLICIT
    )


def test_fallback_default(tmp_path):
    found = discover_wireserver(None, root=str(tmp_path))
    assert found == Endpoint(DEFAULT_WIRESERVER, SOURCE_DEFAULT)
    assert discover_wireserver("", root=str(tmp_path)) == found


@pytest.mark.parametrize(
    "relative, data, label",
    [
        ("run/systemd/netif/leases/2", "OPTION_245=0a000004\n", "systemd-networkd lease"),
        ("var/lib/dhcp/dhclient.eth0.leases", lease_block("a:0:0:4"), "dhclient lease"),
        ("var/lib/dhcp/dhclient.leases", lease_block("a:0:0:4"), "dhclient lease"),
        ("var/lib/dhclient/dhclient-eth0.leases", lease_block("a:0:0:4"), "dhclient lease"),
        ("var/lib/dhclient/dhclient-1234-eth0.lease", lease_block("a:0:0:4"), "dhclient lease"),
        ("var/lib/NetworkManager/dhclient-uuid-eth0.lease", lease_block("a:0:0:4"), "dhclient lease"),
        ("var/lib/dhcpcd/eth0.lease", dhcp_packet(option(245, b"\x0a\x00\x00\x04")), "dhcpcd lease"),
        ("var/lib/dhcpcd5/eth0.lease", dhcp_packet(option(245, b"\x0a\x00\x00\x04")), "dhcpcd lease"),
    ],
)
def test_each_lease_location(tmp_path, relative, data, label):
    path = write(tmp_path, relative, data)
    found = discover_wireserver(root=str(tmp_path), now=NOW)
    assert found == Endpoint("10.0.0.4", f"{label} {path}")


def test_source_names_host_path_when_root_is_slash(tmp_path):
    write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=a83f8110\n")
    found = discover_wireserver(root=str(tmp_path) + "/")
    assert found.source.endswith("/run/systemd/netif/leases/2")
    assert found.source.startswith("systemd-networkd lease /")


def test_newest_file_wins_across_kinds(tmp_path):
    write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=0a000001\n", mtime=1000)
    write(tmp_path, "var/lib/dhcp/dhclient.eth0.leases", lease_block("a:0:0:2"), mtime=3000)
    write(tmp_path, "var/lib/dhcpcd/eth0.lease", dhcp_packet(option(245, b"\x0a\x00\x00\x03")), mtime=2000)
    assert discover_wireserver(root=str(tmp_path), now=NOW).address == "10.0.0.2"
    os.utime(tmp_path / "var/lib/dhcpcd/eth0.lease", (4000, 4000))
    assert discover_wireserver(root=str(tmp_path), now=NOW).address == "10.0.0.3"


def test_newest_file_without_option_falls_through(tmp_path):
    write(tmp_path, "run/systemd/netif/leases/3", "ADDRESS=10.1.0.4\n", mtime=5000)
    write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=0a000001\n", mtime=1000)
    assert discover_wireserver(root=str(tmp_path)).address == "10.0.0.1"


def test_expired_dhclient_lease_falls_back(tmp_path):
    write(tmp_path, "var/lib/dhcp/dhclient.eth0.leases", lease_block(expire="1 2020/01/01 00:00:00"))
    assert discover_wireserver(root=str(tmp_path), now=NOW).address == DEFAULT_WIRESERVER


@pytest.mark.parametrize("raw", ["00000000", "ffffffff", "e0000001", "efffffff"])
def test_unusable_addresses_are_rejected(tmp_path, caplog, raw):
    write(tmp_path, "run/systemd/netif/leases/2", f"OPTION_245={raw}\n")
    with caplog.at_level(logging.WARNING, logger="azprov.endpoint"):
        assert discover_wireserver(root=str(tmp_path)).address == DEFAULT_WIRESERVER
    assert "not a usable address" in caplog.text


def test_huge_file_is_skipped_with_a_warning(tmp_path, caplog):
    write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=0a000001\n", mtime=1000)
    huge = lease_block("a:0:0:2") + "#" * LEASE_SIZE_LIMIT
    path = write(tmp_path, "var/lib/dhcp/dhclient.eth0.leases", huge, mtime=2000)
    with caplog.at_level(logging.WARNING, logger="azprov.endpoint"):
        assert discover_wireserver(root=str(tmp_path), now=NOW).address == "10.0.0.1"
    assert str(path) in caplog.text and "larger than" in caplog.text


def test_garbage_and_unreadable_files_are_skipped(tmp_path, caplog):
    write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=0a000001\n", mtime=1000)
    write(tmp_path, "var/lib/dhcpcd/eth0.lease", os.urandom(1000), mtime=2000)
    write(tmp_path, "var/lib/dhcp/dhclient.eth0.leases", b"\xff\xfe{{{\x00", mtime=3000)
    (tmp_path / "run/systemd/netif/leases/7").mkdir()  # not a regular file
    os.utime(tmp_path / "run/systemd/netif/leases/7", (4000, 4000))
    os.symlink("missing", tmp_path / "run/systemd/netif/leases/9")  # dangling
    os.symlink("8", tmp_path / "run/systemd/netif/leases/8")  # a loop
    fifo = tmp_path / "var/lib/dhcpcd/eth1.lease"
    os.mkfifo(fifo)  # must not block
    os.utime(fifo, (5000, 5000))
    with caplog.at_level(logging.WARNING, logger="azprov.endpoint"):
        found = discover_wireserver(root=str(tmp_path), now=NOW)
    assert found.address == "10.0.0.1"
    assert "not a regular file" in caplog.text
    assert "leases/8: Too many levels of symbolic links" in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of mode")
def test_permission_denied_is_skipped(tmp_path, caplog):
    path = write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=0a000001\n")
    path.chmod(0)
    with caplog.at_level(logging.WARNING, logger="azprov.endpoint"):
        assert discover_wireserver(root=str(tmp_path)).address == DEFAULT_WIRESERVER
    assert "Permission denied" in caplog.text


def test_root_with_glob_characters(tmp_path):
    root = tmp_path / "image[1]*"
    write(root, "run/systemd/netif/leases/2", "OPTION_245=0a000001\n")
    assert discover_wireserver(root=str(root)).address == "10.0.0.1"
