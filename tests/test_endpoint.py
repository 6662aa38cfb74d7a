import datetime
import ipaddress
import logging
import os
import struct
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
from hypothesis import example, given, note, settings, strategies as st

from azprov.host import Host
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
from azprov.errors import AzprovError
from support.strategies import ANY_TEXT, XML_SPACE, fuzz

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
    assert discover_wireserver("127.0.0.1:8080", Host(str(tmp_path))) == Endpoint(
        "127.0.0.1:8080", SOURCE_EXPLICIT
    )


def test_fallback_default(tmp_path):
    found = discover_wireserver(None, Host(str(tmp_path)))
    assert found == Endpoint(DEFAULT_WIRESERVER, SOURCE_DEFAULT)
    assert discover_wireserver("", Host(str(tmp_path))) == found


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
    found = discover_wireserver(None, Host(str(tmp_path)), now=NOW)
    assert found == Endpoint("10.0.0.4", f"{label} {path}")


def test_source_names_host_path_when_root_is_slash(tmp_path):
    write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=a83f8110\n")
    found = discover_wireserver(None, Host(str(tmp_path) + "/"))
    assert found.source.endswith("/run/systemd/netif/leases/2")
    assert found.source.startswith("systemd-networkd lease /")


def test_newest_file_wins_across_kinds(tmp_path):
    write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=0a000001\n", mtime=1000)
    write(tmp_path, "var/lib/dhcp/dhclient.eth0.leases", lease_block("a:0:0:2"), mtime=3000)
    write(tmp_path, "var/lib/dhcpcd/eth0.lease", dhcp_packet(option(245, b"\x0a\x00\x00\x03")), mtime=2000)
    assert discover_wireserver(None, Host(str(tmp_path)), now=NOW).address == "10.0.0.2"
    os.utime(tmp_path / "var/lib/dhcpcd/eth0.lease", (4000, 4000))
    assert discover_wireserver(None, Host(str(tmp_path)), now=NOW).address == "10.0.0.3"


def test_newest_file_without_option_falls_through(tmp_path):
    write(tmp_path, "run/systemd/netif/leases/3", "ADDRESS=10.1.0.4\n", mtime=5000)
    write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=0a000001\n", mtime=1000)
    assert discover_wireserver(None, Host(str(tmp_path))).address == "10.0.0.1"


def test_expired_dhclient_lease_falls_back(tmp_path):
    write(tmp_path, "var/lib/dhcp/dhclient.eth0.leases", lease_block(expire="1 2020/01/01 00:00:00"))
    assert discover_wireserver(None, Host(str(tmp_path)), now=NOW).address == DEFAULT_WIRESERVER


@pytest.mark.parametrize("raw", ["00000000", "ffffffff", "e0000001", "efffffff"])
def test_unusable_addresses_are_rejected(tmp_path, caplog, raw):
    write(tmp_path, "run/systemd/netif/leases/2", f"OPTION_245={raw}\n")
    with caplog.at_level(logging.WARNING, logger="azprov.endpoint"):
        assert discover_wireserver(None, Host(str(tmp_path))).address == DEFAULT_WIRESERVER
    assert "not a usable address" in caplog.text


def test_huge_file_is_skipped_with_a_warning(tmp_path, caplog):
    write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=0a000001\n", mtime=1000)
    huge = lease_block("a:0:0:2") + "#" * LEASE_SIZE_LIMIT
    path = write(tmp_path, "var/lib/dhcp/dhclient.eth0.leases", huge, mtime=2000)
    with caplog.at_level(logging.WARNING, logger="azprov.endpoint"):
        assert discover_wireserver(None, Host(str(tmp_path)), now=NOW).address == "10.0.0.1"
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
        found = discover_wireserver(None, Host(str(tmp_path)), now=NOW)
    assert found.address == "10.0.0.1"
    assert "not a regular file" in caplog.text
    assert "leases/8: Too many levels of symbolic links" in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of mode")
def test_permission_denied_is_skipped(tmp_path, caplog):
    path = write(tmp_path, "run/systemd/netif/leases/2", "OPTION_245=0a000001\n")
    path.chmod(0)
    with caplog.at_level(logging.WARNING, logger="azprov.endpoint"):
        assert discover_wireserver(None, Host(str(tmp_path))).address == DEFAULT_WIRESERVER
    assert "Permission denied" in caplog.text


def test_root_with_glob_characters(tmp_path):
    root = tmp_path / "image[1]*"
    write(root, "run/systemd/netif/leases/2", "OPTION_245=0a000001\n")
    assert discover_wireserver(None, Host(str(root))).address == "10.0.0.1"


# --------------------------------------------------------------------------------------------
# properties (hypothesis): strategies and conventions in support/strategies.py


def check_address(address: Optional[str]) -> None:
    if address is not None:
        assert isinstance(address, str)
        assert str(ipaddress.IPv4Address(address)) == address


def guarded(function, *args):
    """Run a lease parser: a result, or AzprovError; any other exception fails the property."""
    try:
        return function(*args)
    except AzprovError:
        return None


NOWS = st.one_of(
    st.datetimes(min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(9999, 12, 30)),
    st.datetimes(
        min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(9999, 12, 30),
        timezones=st.just(datetime.timezone.utc),
    ),
    st.datetimes(
        min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(9999, 12, 30),
        timezones=st.builds(datetime.timezone, st.timedeltas(
            min_value=datetime.timedelta(hours=-23), max_value=datetime.timedelta(hours=23))),
    ),
)

LEASE_FRAGMENTS = [
    "OPTION_245=", "OPTION_245=a83f8110", " OPTION_245 = 'A83F8110' ", "OPTION_245=\"00000000\"",
    "lease {", "lease{", "}", "{", ";", "option unknown-245 ", "a8:3f:81:10", "1:2:3:4", "a:b:c:d:e",
    '"\\250?\\201\\020"', '"abcd"', '"\\', "expire ", "never", "epoch 1714979289",
    "4 2024/05/06 07:08:09", "0 2160/12/21 03:27:36", "9 9999/12/31 23:59:59", "# comment\n",
    "\n", "\r\n", " ", "\x00", "\u0663", "\u00b2\u00b2", "lease6 {", "ia-na", "epoch 9" * 3,
    "epoch \u00b2", "\x85", "\u2028",
]

LEASE_TEXT = st.lists(st.one_of(st.sampled_from(LEASE_FRAGMENTS), ANY_TEXT), max_size=40).map("".join)


@fuzz(400)
@example("OPTION_245=ffffffff\nOPTION_245=00000000")
@given(st.one_of(ANY_TEXT, LEASE_TEXT, st.text(max_size=2000)))
def test_networkd_any_text(text):
    check_address(guarded(parse_networkd_lease, text))


@st.composite
def networkd_leases(draw) -> Tuple[str, Optional[str]]:
    lines, expected = [], None
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            raw = draw(st.binary(min_size=4, max_size=4))
            hex_text = "".join(
                draw(st.sampled_from(["%02x", "%02X"])) % byte for byte in raw
            )
            quote = draw(st.sampled_from(["", '"', "'"]))
            lines.append(f"{draw(XML_SPACE.map(lambda s: s.replace(chr(13), '').replace(chr(10), '')))}"
                         f"OPTION_245={quote}{hex_text}{quote}")
            expected = str(ipaddress.IPv4Address(raw))
        else:
            lines.append(draw(st.sampled_from(["ADDRESS=10.0.0.4", "# This is private data.",
                                               "OPTION_24=a83f8110", "OPTION_2450=a83f8110",
                                               "OPTION_245=a83f811", "OPTION_245=a83f81100", ""])))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"])), expected


@fuzz(200)
@given(networkd_leases())
def test_networkd_generated_leases_take_the_last_option(pair):
    text, expected = pair
    assert parse_networkd_lease(text) == expected


@fuzz(400)
@example('lease {\n  option unknown-245 a8:3f:81:10;\n  expire epoch \u00b2;\n}\n',
         datetime.datetime(2024, 1, 1))
@example('lease {\n  expire 4 2024/02/30 07:08:09;\n}\n', datetime.datetime(2024, 1, 1))
@given(st.one_of(ANY_TEXT, LEASE_TEXT, st.text(max_size=2000)), NOWS)
def test_dhclient_any_text(text, now):
    check_address(guarded(parse_dhclient_leases, text, now))


def dhclient_hex(draw, raw: bytes) -> str:
    parts = []
    for byte in raw:
        form = draw(st.sampled_from(["%x", "%02x", "%X", "%02X"]))
        parts.append(form % byte)
    return ":".join(parts)


def dhclient_quoted(draw, raw: bytes) -> str:
    out = []
    for byte in raw:
        char = chr(byte)
        if 0x20 <= byte < 0x7F and char not in '"\\' and draw(st.booleans()):
            out.append(char)
        elif char in '"\\' and draw(st.booleans()):
            out.append("\\" + char)
        else:
            out.append("\\%03o" % byte)
    return '"' + "".join(out) + '"'


DHCLIENT_NOISE = [
    'interface "eth0";', "fixed-address 10.0.0.4;", 'server-name "RD0003FF6F4A7C";',
    "option subnet-mask 255.255.255.0;", "option routers 10.0.0.1;",
    "option dhcp-server-identifier 168.63.129.16;", "option unknown-246 a8:3f:81:10;",
    "option unknown-2450 a8:3f:81:10;", 'option domain-name "x; y { } # z";',
    "option rfc3442-classless-static-routes 0,10,0,0,1,32,168,63,129,16,10,0,0,1;",
    "renew 0 2160/12/21 03:27:36;", "rebind 0 2160/12/21 03:27:36;", "# a comment { ;\n",
    "option unknown-245 a8:3f:81;", "option unknown-245 a8:3f:81:10:01;", "option unknown-245 zz;",
]


@st.composite
def dhclient_databases(draw) -> Tuple[str, datetime.datetime, Optional[str]]:
    """A lease database with several blocks; the expected address is computed independently."""
    now = draw(st.datetimes(min_value=datetime.datetime(1971, 1, 1),
                            max_value=datetime.datetime(2200, 1, 1)))
    now_utc = now.replace(tzinfo=datetime.timezone.utc)
    if draw(st.booleans()):
        now = now_utc
    chunks = []
    if draw(st.booleans()):
        chunks.append('default-duid "\\000\\004\\221&|R\\237\\002L\\376";\n')
    expected = None
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["lease", "lease", "lease", "other"]))
        statements, value, usable = [], None, True
        for _ in range(draw(st.integers(0, 6))):
            choice = draw(st.sampled_from(["245", "245", "expire", "noise"]))
            if choice == "245":
                raw = draw(st.binary(min_size=4, max_size=4))
                encoded = dhclient_quoted(draw, raw) if draw(st.booleans()) else dhclient_hex(draw, raw)
                statements.append(f"option unknown-245 {encoded};")
                value = str(ipaddress.IPv4Address(raw))
            elif choice == "expire":
                form = draw(st.sampled_from(["date", "date", "never", "epoch", "bad"]))
                if form == "never":
                    statements.append("expire never;")
                elif form == "bad":
                    statements.append(draw(st.sampled_from([
                        "expire soon;", "expire 4 2024/02/30 07:08:09;", "expire;",
                        "expire epoch;", "expire 2024/05/06 07:08:09;", "expire x 2024/05/06 07:08:09;",
                    ])))
                    usable = False
                else:
                    delta = draw(st.one_of(
                        st.timedeltas(min_value=datetime.timedelta(days=-3000),
                                      max_value=datetime.timedelta(days=3000)),
                        st.sampled_from([datetime.timedelta(0), datetime.timedelta(seconds=1),
                                         datetime.timedelta(seconds=-1)]),
                    ))
                    expiry = (now_utc + delta).replace(microsecond=0)
                    if expiry.year < 1971:  # no negative epoch values
                        expiry = datetime.datetime(1971, 1, 1, tzinfo=datetime.timezone.utc)
                    if form == "epoch":  # a comment runs to the end of its line
                        statements.append(f"expire epoch {int(expiry.timestamp())}; # {expiry}\n")
                    else:
                        weekday = draw(st.integers(0, 6))
                        statements.append(f"expire {weekday} {expiry:%Y/%m/%d %H:%M:%S};")
                    if expiry <= now_utc:
                        usable = False
            else:
                statements.append(draw(st.sampled_from(DHCLIENT_NOISE)))
        separator = draw(st.sampled_from(["\n  ", " ", "\n\t"]))
        body = separator.join(statements)
        if kind == "lease":
            chunks.append(f"lease {{{separator}{body}\n}}\n")
            if usable and value is not None:
                expected = value
        else:
            head = draw(st.sampled_from(["alias", "lease6", "lease4", "failover peer \"x\""]))
            inner = draw(st.sampled_from(["", "ia-na 01:02 { iaaddr 10.0.0.9 { } }"]))
            chunks.append(f"{head} {{ {inner}\n{body}\n}}\n")
    return "".join(chunks), now, expected


@fuzz(400)
@given(dhclient_databases())
def test_dhclient_generated_databases_pick_the_last_unexpired_block(triple):
    text, now, expected = triple
    note(text)
    assert parse_dhclient_leases(text, now) == expected


@fuzz(400)
@example(b"")
@example(b"\x00" * 236 + b"\x63\x82\x53\x63" + b"\xf5")
@given(st.one_of(
    st.binary(max_size=600),
    st.binary(min_size=236, max_size=236).flatmap(
        lambda header: st.binary(max_size=300).map(lambda rest: header + b"\x63\x82\x53\x63" + rest)
    ),
))
def test_dhcpcd_any_bytes(data):
    check_address(guarded(parse_dhcpcd_lease, data))


DHCP_OTHER_OPTION = st.tuples(
    st.integers(1, 254).filter(lambda code: code != 245),
    st.one_of(st.binary(max_size=16), st.binary(max_size=255)),
).map(lambda pair: bytes([pair[0], len(pair[1])]) + pair[1])


@st.composite
def dhcpcd_packets(draw, wrong_lengths: bool = True) -> Tuple[bytes, Optional[str]]:
    """A raw DHCP packet whose option 245 may be split over several instances (RFC 3396)."""
    header = draw(st.binary(min_size=236, max_size=236))
    options: List[bytes] = []
    for _ in range(draw(st.integers(0, 8))):
        options.append(draw(DHCP_OTHER_OPTION))
    options += [b"\x00"] * draw(st.integers(0, 3))
    expected = None
    if draw(st.integers(0, 4)):
        value = draw(st.one_of(st.binary(min_size=4, max_size=4), st.binary(max_size=8))
                     if wrong_lengths else st.binary(min_size=4, max_size=4))
        cuts = sorted(draw(st.lists(st.integers(0, len(value)), max_size=3)))
        pieces = [value[a:b] for a, b in zip([0] + cuts, cuts + [len(value)])]
        # the pieces keep their order (concatenation order matters), other options in between
        slots = sorted(draw(st.lists(st.integers(0, len(options)), min_size=len(pieces),
                                     max_size=len(pieces))), reverse=True)
        for slot, piece in zip(slots, reversed(pieces)):
            options.insert(slot, bytes([245, len(piece)]) + piece)
        if len(value) == 4:
            expected = str(ipaddress.IPv4Address(value))
    options = draw(st.permutations(options)) if draw(st.booleans()) and expected is None else options
    # the end option (a lease without it is a cut-short file: None); after it, garbage, even a
    # fake option 245, must be ignored
    tail = b"\xff" + draw(st.sampled_from([b"", b"\xf5\x04\x01\x02\x03\x04", b"\x00\x01"]))
    return header + b"\x63\x82\x53\x63" + b"".join(options) + tail, expected


@fuzz(250)
@given(dhcpcd_packets())
def test_dhcpcd_generated_packets_round_trip(pair):
    data, expected = pair
    assert parse_dhcpcd_lease(data) == expected


def check_truncations(packet: bytes, expected: Optional[str], cut: int) -> None:
    result = parse_dhcpcd_lease(packet[:cut])
    check_address(result)
    assert result in (None, expected), (cut, result, expected)


@fuzz(100)
@given(dhcpcd_packets(wrong_lengths=False), st.data())
def test_dhcpcd_truncated_packets_never_guess(pair, data):
    packet, expected = pair
    check_truncations(packet, expected, data.draw(st.integers(0, len(packet))))


@fuzz(30)
@example((b"\x00" * 236 + b"\x63\x82\x53\x63" + b"\xf5\x04\x01\x02\x03\x04"
          + b"\xf5\x04\x05\x06\x07\x08" + b"\xff", None), 246)
@given(dhcpcd_packets(), st.integers(0, 2000))
def test_dhcpcd_truncated_packets_never_guess_whatever_the_option_length(pair, cut):
    check_truncations(*pair, cut)
