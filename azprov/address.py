"""The one parser of fabric addresses: ``HOST``, ``HOST:PORT``, ``[IPV6]:PORT``, ``http://HOST[:PORT]``.

Used for every address azprov is given: the configuration's ``[wireserver]``/``[imds]`` address
(and so ``--wireserver``/``--imds``), the URL the HTTP clients are built with, and the emulator's
listening addresses.  An address is refused, never silently repaired: an empty one, a scheme
other than plain ``http``, a path, a user name, a port that is not a number or out of range
(port 0 too, except for a listener, where it means "any free port").

This module imports nothing of azprov but :mod:`azprov.errors`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Optional

from azprov.errors import ConfigError

ADDRESS_FORMS = "HOST, HOST:PORT or http://HOST[:PORT]"
LISTEN_FORMS = "HOST:PORT or [IPV6]:PORT"
DEFAULT_PORT = 80

# a host name or IPv4 address, or an IPv6 address in brackets; then optionally :port
_HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?))"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


@dataclass(frozen=True)
class Address:
    """A parsed address.  ``host`` has no brackets; ``port`` is None when none was given;
    ``text`` is the address as it was written (what ``str()`` gives back: the configuration
    prints it so)."""

    host: str
    port: Optional[int] = None
    text: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        return self.text or self.netloc

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port if self.port is not None else DEFAULT_PORT}"

    def url(self) -> str:
        """``http://host:port`` (port 80 when none was given), the base of every request."""
        return f"http://{self.netloc}"


def parse_address(text: str, *, listen: bool = False) -> Address:
    """``text`` parsed, or :class:`ConfigError` saying what is wrong with it.

    ``listen``: an address to listen on (the emulator): the port is required and may be 0.
    """
    forms = LISTEN_FORMS if listen else ADDRESS_FORMS
    ports = "from 0 to 65535" if listen else "from 1 to 65535"
    if not isinstance(text, str) or not text:
        raise ConfigError(f"expected {forms}, got an empty address")
    rest = text
    if "://" in rest:
        scheme, _, rest = rest.partition("://")
        if scheme.lower() != "http":
            raise ConfigError(f"expected {forms} (the fabric speaks plain http only), got {_shown(text)}")
        if rest.endswith("/"):
            rest = rest[:-1]
    match = _HOST_PORT.fullmatch(rest)
    if match is None:
        hint = " (put an IPv6 address in brackets, e.g. [::1]:8080)" if rest.count(":") > 1 else ""
        raise ConfigError(f"expected {forms}{hint}, got {_shown(text)}")
    if match.group("v6") is not None:
        try:
            ipaddress.IPv6Address(match.group("v6"))
        except ValueError:
            raise ConfigError(f"expected {forms}: {_shown('[' + match.group('v6') + ']')} "
                              f"is not an IPv6 address, got {_shown(text)}") from None
    port = int(match.group("port")) if match.group("port") is not None else None
    if port is None and listen:
        raise ConfigError(f"expected {forms} (a port is required), got {_shown(text)}")
    if port is not None and not (0 if listen else 1) <= port <= 65535:
        raise ConfigError(f"expected {forms} with a port {ports}, got {_shown(text)}")
    return Address(match.group("v6") or match.group("name"), port, text)


def _shown(text: str) -> str:
    """The value as it appears in messages: quoted, escaped, shortened."""
    return json.dumps(text if len(text) <= 60 else text[:60] + "...")
