"""Configuration values checked strictly: one layer (a file or the command-line overrides) of raw
``{section: {key: value}}`` converted to the types of the configuration's dataclass fields.

Driven by the dataclasses of :mod:`azprov.config` (their field types, plus an optional ``check``
in a field's metadata that returns what is wrong, or None).  An address field (type
:class:`~azprov.address.Address`) is parsed here, once: a string by the one address parser, an
already parsed ``Address`` (a command-line value) taken as it is.  An unknown section or key, or a value
of the wrong type, is a :class:`~azprov.errors.ConfigError` naming the source and the key, with a
suggestion for a near miss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any, Dict, Mapping

from azprov.address import Address, parse_address
from azprov.errors import ConfigError


def describe(value: object) -> str:
    """``string "x"``, ``integer 3``, ``boolean true`` ... for error messages (shortened)."""
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}" if abs(value) < 10**30 else "a very large integer"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        text = json.dumps(value if len(value) <= 60 else value[:60] + "...")
        return f"string {text}"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "table"
    if value is None:
        return "nothing"
    return type(value).__name__


class Invalid(Exception):
    """A value does not fit its field; the argument is the complete explanation."""


def convert(hint: Any, value: object) -> object:
    """``value`` converted to the field type ``hint``; Invalid if it does not fit."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    got = describe(value)
    if origin is typing.Union and type(None) in args:  # Optional[X]: "" means unset
        if value == "":
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return convert(inner, value)
    if hint is bool:
        if not isinstance(value, bool):
            raise Invalid(f"expected true or false, got {got}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"expected a number, got {got}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not (math.isfinite(number) and number > 0):
            raise Invalid(f"expected a finite number greater than 0, got {got}")
        return number
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise Invalid(f"expected a whole number, 0 or more, got {got}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {got}")
        return value
    if hint is Address:
        if isinstance(value, Address):
            return value
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {got}")
        try:
            return parse_address(value)
        except ConfigError as exc:
            raise Invalid(str(exc)) from None
    if origin is tuple and args[1:] == (Ellipsis,):
        if not isinstance(value, (list, tuple)):
            raise Invalid(f"expected an array, got {got}")
        items = []
        for index, item in enumerate(value, 1):
            try:
                items.append(convert(args[0], item))
            except Invalid as exc:
                raise Invalid(f"item {index}: {exc}") from None
        return tuple(items)
    raise TypeError(f"configuration field type {hint!r} is not supported")  # a bug in azprov.config


def validate_layer(source: str, data: Mapping[str, object], sections: Mapping[str, type]) -> Dict[str, Dict[str, object]]:
    """Check one layer (a file or the overrides) and return its converted values."""
    result: Dict[str, Dict[str, object]] = {}
    for section_name, section in data.items():
        cls = sections.get(section_name)
        if cls is None and not isinstance(section, Mapping):
            raise ConfigError(
                f"{source}: {section_name}: every setting belongs in a section"
                f" ({', '.join(f'[{name}]' for name in sections)})",
                source=source,
                key=section_name,
            )
        if cls is None:
            raise ConfigError(
                f"{source}: unknown section [{section_name}]{suggest(section_name, sections)}"
                f" (sections: {', '.join(sections)})",
                source=source,
                key=section_name,
            )
        if not isinstance(section, Mapping):
            raise ConfigError(
                f"{source}: [{section_name}]: expected a table of settings, "
                f"got {describe(section)}",
                source=source,
                key=section_name,
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        converted: Dict[str, object] = {}
        for key, value in section.items():
            where = f"{source}: [{section_name}] {key}"
            if key not in fields:
                raise ConfigError(
                    f"{where}: unknown key{suggest(key, fields)}"
                    f" (keys of [{section_name}]: {', '.join(fields)})",
                    source=source,
                    key=f"{section_name}.{key}",
                )
            try:
                new = convert(hints[key], value)
                check = fields[key].metadata.get("check")
                problem = check(new) if check and new is not None else None
                if problem:
                    raise Invalid(problem)
            except Invalid as exc:
                raise ConfigError(
                    f"{where}: {exc}",
                    source=source,
                    key=f"{section_name}.{key}",
                ) from None
            converted[key] = new
        result[section_name] = converted
    return result


def suggest(name: str, known: typing.Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
