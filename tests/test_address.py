"""azprov.address: the one parser of fabric addresses (configuration, HTTP clients, emulator)."""

from urllib.parse import urlsplit

import pytest
from hypothesis import given

from azprov.address import Address, parse_address
from azprov.errors import ConfigError, ExitCode
from support.strategies import ANY_TEXT, addresses, fuzz


@pytest.mark.parametrize(
    "text, host, port, url",
    [
        ("168.63.129.16", "168.63.129.16", None, "http://168.63.129.16:80"),
        ("127.0.0.1:8080", "127.0.0.1", 8080, "http://127.0.0.1:8080"),
        ("http://localhost:9/", "localhost", 9, "http://localhost:9"),
        ("HTTP://wire.example", "wire.example", None, "http://wire.example:80"),
        ("[::1]:81", "::1", 81, "http://[::1]:81"),
        ("http://[fe80::1]", "fe80::1", None, "http://[fe80::1]:80"),
        ("x:65535", "x", 65535, "http://x:65535"),
        ("x:00080", "x", 80, "http://x:80"),
    ],
)
def test_address_forms(text, host, port, url):
    address = parse_address(text)
    assert address == Address(host, port)
    assert address.url() == url


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "got an empty address"),
        ("x:0", "with a port from 1 to 65535"),  # was silently port 80 in the HTTP client
        ("http://x:0/", "with a port from 1 to 65535"),
        ("x:65536", "with a port from 1 to 65535"),
        ("x:123456", "got"),
        ("x:port", "got"),
        ("x:", "got"),
        ("https://x", "plain http only"),
        ("ftp://x", "plain http only"),
        ("http://x/path", "got"),
        ("http://x?q", "got"),
        ("http://u@x", "got"),
        ("a b", "got"),
        (" x", "got"),
        ("-x", "got"),
        ("::1", "put an IPv6 address in brackets"),
        ("[nothost]:80", "got"),
        ("[:::::]:80", "is not an IPv6 address"),
    ],
)
def test_bad_addresses_are_refused(text, why):
    with pytest.raises(ConfigError, match=r"^expected HOST, HOST:PORT or http://HOST\[:PORT\]") as caught:
        parse_address(text)
    assert why in str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG


@pytest.mark.parametrize("text, host, port", [
    ("127.0.0.1:8080", "127.0.0.1", 8080),
    ("[::1]:8081", "::1", 8081),
    ("localhost:0", "localhost", 0),  # a listener on any free port
    ("http://127.0.0.1:9/", "127.0.0.1", 9),
])
def test_listen_addresses(text, host, port):
    assert parse_address(text, listen=True) == Address(host, port)


@pytest.mark.parametrize("text", ["127.0.0.1", "", "127.0.0.1:70000", "[::1]80", "::1:80", ":80"])
def test_bad_listen_addresses(text):
    with pytest.raises(ConfigError, match=r"^expected HOST:PORT or \[IPV6\]:PORT"):
        parse_address(text, listen=True)


@fuzz(300)
@given(addresses())
def test_every_valid_address_gives_the_url_it_names(text):
    address = parse_address(text)
    parts = urlsplit(address.url())
    assert parts.scheme == "http" and parts.path == ""
    assert parts.hostname == address.host.lower()
    assert parts.port == (address.port if address.port is not None else 80)
    assert address.url() == parse_address(address.url()).url()  # a fixed point


@fuzz(300)
@given(ANY_TEXT)
def test_any_text_is_an_address_or_a_config_error(text):
    try:
        address = parse_address(text)
    except ConfigError:
        return
    assert address.port is None or 1 <= address.port <= 65535
    assert "\n" not in address.url() and " " not in address.url()
