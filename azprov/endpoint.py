"""Where the WireServer is: an explicit address, else DHCP option 245, else 168.63.129.16.

Azure's DHCP servers hand out the WireServer address in the private option 245 (four bytes,
``a8 3f 81 10`` for 168.63.129.16).  Each DHCP client stores it differently:

* systemd-networkd: ``/run/systemd/netif/leases/<ifindex>``, a ``KEY=VALUE`` file with the line
  ``OPTION_245=a83f8110``;
* ISC dhclient: text lease databases with ``lease { ... }`` blocks and the line
  ``option unknown-245 a8:3f:81:10;`` (colon-separated hex, single digits allowed, or a quoted
  string when all four bytes happen to be printable);
* dhcpcd: a binary ``<interface>.lease``, the raw DHCP packet (options from byte 240).

Lease files are untrusted, possibly stale or half-written: every read is capped, every failure is
logged and skipped, and every candidate must be a usable unicast IPv4 address.  Discovery never
raises.
"""

from __future__ import annotations

import datetime
import errno
import ipaddress
import logging
import os
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from azprov.errors import StepFailed
from azprov.leases import LEASE_FILES

if TYPE_CHECKING:
    from azprov.host import Host

log = logging.getLogger(__name__)

DEFAULT_WIRESERVER = "168.63.129.16"
WIRESERVER_OPTION = 245
LEASE_SIZE_LIMIT = 1024 * 1024  # bytes read from one lease file, at most

SOURCE_EXPLICIT = "command line or configuration"
SOURCE_DEFAULT = "default (no DHCP option 245 found)"

_DHCP_MAGIC_COOKIE = b"\x63\x82\x53\x63"
_DHCP_OPTIONS_OFFSET = 240  # 236-byte BOOTP header + 4-byte magic cookie


@dataclass(frozen=True)
class Endpoint:
    """The WireServer address to use and, for logs and ``status``, where it came from."""

    address: str
    source: str


# --------------------------------------------------------------------------------------------
# systemd-networkd

_NETWORKD_LINE = re.compile(r"^\s*OPTION_245\s*=\s*[\"']?([0-9A-Fa-f]{8})[\"']?\s*$")


def parse_networkd_lease(text: str) -> Optional[str]:
    """Option 245 from a systemd-networkd lease file (``OPTION_245=a83f8110``), or None."""
    found: Optional[str] = None
    for line in text.splitlines():
        match = _NETWORKD_LINE.match(line)
        if match:
            found = _dotted(bytes.fromhex(match.group(1)))
    return found


# --------------------------------------------------------------------------------------------
# ISC dhclient

# Tokens of dhclient's lease syntax: quoted strings (with backslash escapes), braces, semicolons,
# comments, and bare words (which include hex strings such as a8:3f:81:10 and dates).
_DHCLIENT_TOKEN = re.compile(
    r'\s+|#[^\n]*|"(?P<string>(?:[^"\\]|\\.)*)"|(?P<punct>[{};])|(?P<word>[^\s{};"#]+)',
    re.DOTALL,
)
_HEX_BYTES = re.compile(r"^[0-9A-Fa-f]{1,2}(?::[0-9A-Fa-f]{1,2})*$")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{1,3})|\\(.)", re.DOTALL)
_NEVER = "never"


class _LeaseSyntaxError(ValueError):
    pass


def _dhclient_statements(text: str) -> List[Tuple[int, List[Tuple[str, str]]]]:
    """Split a lease database into statements: (brace depth, [(kind, token), ...]).

    ``kind`` is ``word``, ``string``, ``{`` or ``}``; a statement ends at ``;``, ``{`` or ``}``.
    """
    statements: List[Tuple[int, List[Tuple[str, str]]]] = []
    current: List[Tuple[str, str]] = []
    depth = 0
    position = 0
    while position < len(text):
        match = _DHCLIENT_TOKEN.match(text, position)
        if match is None:  # an unterminated quoted string
            raise _LeaseSyntaxError(f"unterminated string at offset {position}")
        position = match.end()
        if match.group("word") is not None:
            current.append(("word", match.group("word")))
        elif match.group("string") is not None:
            current.append(("string", match.group("string")))
        elif match.group("punct") is not None:
            punct = match.group("punct")
            if punct == "{":
                current.append(("{", "{"))
                statements.append((depth, current))
                depth += 1
            elif punct == "}":
                if current:
                    statements.append((depth, current))
                depth -= 1
                if depth < 0:
                    raise _LeaseSyntaxError("unbalanced '}'")
                statements.append((depth, [("}", "}")]))
            elif current:
                statements.append((depth, current))
            current = []
    if current:
        statements.append((depth, current))
    return statements


def _decode_dhclient_value(kind: str, value: str) -> Optional[bytes]:
    """The bytes of an ``option unknown-245`` value: hex pairs or a quoted string."""
    if kind == "word":
        if not _HEX_BYTES.match(value):
            return None
        return bytes(int(part, 16) for part in value.split(":"))

    def unescape(match: "re.Match[str]") -> str:
        if match.group(1) is not None:
            return chr(int(match.group(1), 8) & 0xFF)
        return match.group(2)

    raw = _OCTAL_ESCAPE.sub(unescape, value)
    if any(ord(char) > 0xFF for char in raw):
        return None
    return raw.encode("latin-1")


def _parse_dhclient_expiry(tokens: List[Tuple[str, str]]) -> datetime.datetime:
    """``expire`` arguments -> aware UTC datetime, ``datetime.max`` for never; ValueError if bad.

    Forms written by dhclient: ``expire 4 2024/05/06 07:08:09;`` (weekday, date, time, UTC),
    ``expire never;`` and, with ``db-time-format local``, ``expire epoch 1714979289;``.
    """
    words = [value for kind, value in tokens if kind == "word"]
    if words == [_NEVER]:
        return datetime.datetime.max.replace(tzinfo=datetime.timezone.utc)
    if len(words) == 2 and words[0] == "epoch" and words[1].isdigit():
        seconds = int(words[1])
        if seconds > 253402300799:  # beyond year 9999
            return datetime.datetime.max.replace(tzinfo=datetime.timezone.utc)
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    if len(words) == 3 and words[0].isdigit():
        stamp = datetime.datetime.strptime(f"{words[1]} {words[2]}", "%Y/%m/%d %H:%M:%S")
        return stamp.replace(tzinfo=datetime.timezone.utc)
    raise ValueError(f"unrecognised expiry {' '.join(words)!r}")


def parse_dhclient_leases(text: str, now: datetime.datetime) -> Optional[str]:
    """Option 245 of the last unexpired ``lease {}`` block that carries it, or None.

    ``now`` is compared with each block's ``expire`` (UTC; a naive ``now`` is taken as UTC).  A
    block without ``expire`` counts as current; a block whose expiry cannot be read is ignored.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.timezone.utc)
    try:
        statements = _dhclient_statements(text)
    except _LeaseSyntaxError as exc:
        log.debug("dhclient lease database is malformed: %s", exc)
        return None

    found: Optional[str] = None
    in_lease = False
    lease_value: Optional[str] = None
    lease_usable = True
    for depth, tokens in statements:
        if not tokens:
            continue
        if depth == 0 and tokens[-1][0] == "{":
            in_lease = [value for _, value in tokens] == ["lease", "{"]
            lease_value, lease_usable = None, True
            continue
        if not in_lease:
            continue
        if depth == 0 and tokens[0][0] == "}":
            if lease_usable and lease_value is not None:
                found = lease_value
            in_lease = False
            continue
        if depth != 1:
            continue
        head = [value for kind, value in tokens[:2] if kind == "word"]
        if head == ["option", "unknown-245"] and len(tokens) == 3:
            raw = _decode_dhclient_value(*tokens[2])
            if raw is not None and len(raw) == 4:
                lease_value = _dotted(raw)
        elif head[:1] == ["expire"]:
            try:
                expiry = _parse_dhclient_expiry(tokens[1:])
            except ValueError as exc:
                log.debug("ignoring a dhclient lease block: %s", exc)
                lease_usable = False
            else:
                if expiry <= now:
                    lease_usable = False
    return found


# --------------------------------------------------------------------------------------------
# dhcpcd


def parse_dhcpcd_lease(data: bytes) -> Optional[str]:
    """Option 245 from a dhcpcd binary lease (a raw DHCP packet), or None.

    Several instances of the option are concatenated (RFC 3396); the result must be 4 bytes.  A
    truncated option list yields None rather than a guess.
    """
    if len(data) < _DHCP_OPTIONS_OFFSET:
        return None
    if data[_DHCP_OPTIONS_OFFSET - 4 : _DHCP_OPTIONS_OFFSET] != _DHCP_MAGIC_COOKIE:
        return None
    value = b""
    seen = False
    position = _DHCP_OPTIONS_OFFSET
    while position < len(data):
        code = data[position]
        if code == 0:  # pad
            position += 1
            continue
        if code == 255:  # end
            break
        if position + 1 >= len(data):
            return None
        length = data[position + 1]
        start, end = position + 2, position + 2 + length
        if end > len(data):
            return None
        if code == WIRESERVER_OPTION:
            value += data[start:end]
            seen = True
        position = end
    else:
        return None  # no end option: a cut-short file, not a whole lease
    if not seen or len(value) != 4:
        return None
    return _dotted(value)


# --------------------------------------------------------------------------------------------
# discovery


def _dotted(raw: bytes) -> str:
    return ".".join(str(octet) for octet in struct.unpack("!4B", raw))


def _usable(address: str) -> bool:
    """A unicast IPv4 address the WireServer could live at."""
    try:
        parsed = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return not (
        parsed.is_unspecified
        or parsed.is_multicast
        or parsed == ipaddress.IPv4Address("255.255.255.255")
    )


def _parse_networkd(data: bytes, now: datetime.datetime) -> Optional[str]:
    return parse_networkd_lease(data.decode("utf-8", errors="replace"))


def _parse_dhclient(data: bytes, now: datetime.datetime) -> Optional[str]:
    # latin-1 keeps every byte, which a quoted option value needs.
    return parse_dhclient_leases(data.decode("latin-1"), now)


def _parse_dhcpcd(data: bytes, now: datetime.datetime) -> Optional[str]:
    return parse_dhcpcd_lease(data)


_Parser = Callable[[bytes, datetime.datetime], Optional[str]]

# the label used in Endpoint.source and the parser of each kind of lease file in LEASE_FILES
_KINDS: Dict[str, Tuple[str, _Parser]] = {
    "networkd": ("systemd-networkd lease", _parse_networkd),
    "dhclient": ("dhclient lease", _parse_dhclient),
    "dhcpcd": ("dhcpcd lease", _parse_dhcpcd),
}


def _lease_files(host: "Host") -> List[Tuple[float, str, str, _Parser]]:
    """Every lease file in the root: (mtime, in-root path, label, parser), newest first."""
    found = []
    seen = set()
    for kind, pattern in LEASE_FILES:
        label, parser = _KINDS[kind]
        for path in host.glob(pattern):
            if path in seen:
                continue
            seen.add(path)
            try:
                mtime = os.stat(host.real_path(path)).st_mtime
            except OSError as exc:
                log.warning("skipping DHCP lease %s: %s", path, exc.strerror or exc)
                continue
            except StepFailed:  # a symlink loop inside the root
                log.warning("skipping DHCP lease %s: %s", path, os.strerror(errno.ELOOP))
                continue
            found.append((mtime, path, label, parser))
    found.sort(key=lambda item: (-item[0], item[1]))
    return found


def discover_wireserver(
    explicit: Optional[str],
    host: "Host",
    now: Optional[datetime.datetime] = None,
) -> Endpoint:
    """The WireServer endpoint: ``explicit`` if given, else the newest lease's option 245, else
    :data:`DEFAULT_WIRESERVER`.

    ``explicit`` is used as given (the configuration layer validates it).  Lease files are looked
    up in the host's root (links resolve inside it, never on the build host); the newest file
    carrying a usable option 245 wins, whatever the client.
    """
    if explicit:
        return Endpoint(explicit, SOURCE_EXPLICIT)
    when = now or datetime.datetime.now(datetime.timezone.utc)
    for _mtime, in_root, label, parser in _lease_files(host):
        path = host.path(in_root)
        try:
            data = host.read(in_root, follow=True, limit=LEASE_SIZE_LIMIT)
            if data is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
            address = parser(data, when)
        except (OSError, ValueError, StepFailed) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            log.warning("skipping DHCP lease %s: %s", path, reason)
            continue
        if address is None:
            log.debug("DHCP lease %s has no option %d", path, WIRESERVER_OPTION)
            continue
        if not _usable(address):
            log.warning(
                "skipping DHCP lease %s: option %d is %s, not a usable address",
                path,
                WIRESERVER_OPTION,
                address,
            )
            continue
        log.debug("WireServer %s from %s %s", address, label, path)
        return Endpoint(address, f"{label} {path}")
    return Endpoint(DEFAULT_WIRESERVER, SOURCE_DEFAULT)
