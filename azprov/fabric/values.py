"""Strict readers of scenario values: each checks one value and names its dotted key
(``where``) in the :class:`ScenarioError` it raises."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional

from azprov.errors import ScenarioError


def check_keys(table: Mapping, allowed: frozenset, where: str) -> None:
    for key in table:
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            name = f"{where}.{key}" if where else str(key)
            raise ScenarioError(
                f"scenario: unknown key {name!r}{hint}; known here: {', '.join(sorted(allowed))}"
            )


def table(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ScenarioError(f"scenario: {where} must be a table/object, not {type(value).__name__}")
    return value


def number(value: Any, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(f"scenario: {where} must be a number of seconds, not {value!r}")
    if value < 0 or (positive and value == 0):
        raise ScenarioError(f"scenario: {where} must be {'above' if positive else 'at least'} 0, not {value!r}")
    return float(value)


def integer(value: Any, where: str, minimum: int = 0, maximum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"scenario: {where} must be an integer, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ScenarioError(f"scenario: {where} must be at least {minimum}{upper}, not {value}")
    return value


def string(value: Any, where: str, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not empty_ok and not value):
        raise ScenarioError(f"scenario: {where} must be a non-empty string, not {value!r}")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"scenario: {where} must be true or false, not {value!r}")
    return value


def retry_after(value: Any, where: str) -> str:
    """A Retry-After header value: a string as given (dates too), or a number of seconds."""
    if isinstance(value, str):
        if not value or any(c in value for c in "\r\n"):
            raise ScenarioError(f"scenario: {where} must be a one-line header value, not {value!r}")
        return value
    seconds = number(value, where)
    return str(int(seconds)) if seconds == int(seconds) else str(seconds)


def read_file(name: Any, where: str, base_dir: Optional[Path]) -> bytes:
    path = Path(string(name, where))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"scenario: {where}: cannot read {path}: {exc.strerror or exc}") from None
