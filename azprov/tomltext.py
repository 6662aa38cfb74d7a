"""TOML text in and out: the one strict reader (the configuration, the emulator's scenarios) and
the writer of the values ``azprov config`` prints.

Reading uses ``tomllib`` (Python 3.11+) or ``tomli`` (its backport, a dependency before 3.11).
This module imports nothing of azprov.
"""

from __future__ import annotations

from typing import Any, Dict


def parse_toml(data: bytes) -> Dict[str, Any]:
    """The TOML document in ``data`` (UTF-8), or ``ValueError`` with one line saying what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc}") from None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ValueError("reading TOML needs Python 3.11 or the tomli package") from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ValueError("invalid TOML: values nested too deeply") from None
    except ValueError as exc:  # TOMLDecodeError, or an integer too long to convert
        raise ValueError(f"invalid TOML: {exc}") from None


def toml_value(value: object) -> str:
    """``value`` (a bool, an integer, a finite float, a string, or a tuple of them) as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # finite (the caller's validation); repr is valid TOML and round-trips exactly
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def _toml_string(value: str) -> str:
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
