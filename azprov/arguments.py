"""The types of azprov's command-line values: each returns the value or raises
:class:`argparse.ArgumentTypeError`, so a bad value is a bad command line (exit 2), never a
configuration error (exit 3, which is for the configuration files).

Addresses are parsed by the one address parser, :func:`azprov.address.parse_address`, here
and only here for a command-line address (the configuration takes the parsed value as it is).
"""

from __future__ import annotations

import argparse
import os
import stat

from azprov.address import Address, parse_address
from azprov.errors import ConfigError


def address(text: str) -> Address:
    """``--wireserver``/``--imds``: parsed by the one address parser; a bad one (an empty one
    too) is a bad command line, exit 2, not a configuration error."""
    try:
        return parse_address(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def listen_address(text: str) -> str:
    """``fabric serve --wireserver/--imds``: an address to listen on (a port required, 0: any),
    checked here (a bad one is exit 2); the emulator takes the text."""
    try:
        parse_address(text, listen=True)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def directory(text: str) -> str:
    """``--root``: an existing directory (one this user may not look into is left to the
    command, or to its refusal without root)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a directory, got an empty path")
    try:
        is_dir = stat.S_ISDIR(os.stat(text).st_mode)
    except PermissionError:
        return text
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc.strerror}") from None
    if not is_dir:
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return text


def text(value: str) -> str:
    """``--reason``: some text, not only blanks."""
    if not value.strip():
        raise argparse.ArgumentTypeError("expected some text, got none")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number of seconds")
    return value
