"""The provisioning report: what azprov tells the host (KVP ``PROVISIONING_REPORT``) and the
WireServer (the health report's Description), ``key=value`` fields as one ``|``-separated CSV row.

:func:`encode_success` and :func:`encode_description` (an :class:`~azprov.errors.AzprovError`'s
reason, step, details and message) build it.  Both reports are this row, written as
cloud-init writes it: Python's csv writer with ``|`` between fields and minimal quoting, the quote
character being the single quote.  A field holding ``|``, a single quote or a line break (CR or
LF) is put in single quotes, its quotes doubled; every other field is written as it is (double
quotes and Unicode line separators included, which a CSV reader takes as ordinary characters).
Read back with ``csv.reader(..., **REPORT_CSV)``.

A row longer than a limit is shortened by fields, never by cutting its text, which could end
inside a quoted field and leave a row no CSV reader reads as written.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from azprov.errors import DESCRIPTION_LIMIT, DOCUMENTATION_URL, AzprovError

# The dialect, for writers and readers.
REPORT_CSV = {"delimiter": "|", "quotechar": "'", "quoting": csv.QUOTE_MINIMAL, "lineterminator": "\r\n"}


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "replace"))


def _row(items: Sequence[str]) -> str:
    with io.StringIO() as buffer:
        csv.writer(buffer, **REPORT_CSV).writerow(items)
        text = buffer.getvalue()
    return text[:-2] if text.endswith("\r\n") else text


def encode_fields(fields: Sequence[Tuple[str, object]], *, limit: Optional[int] = None,
                  size: Callable[[str], int] = len) -> str:
    """``key=value`` fields as one ``|``-separated CSV row, quoted as cloud-init quotes them (see
    :data:`REPORT_CSV`), so a CSV reader with that dialect reads the fields back exactly.

    With ``limit``, a longer row (as ``size`` measures it) is shortened by fields, never by
    cutting its text, which could end inside a quoted field: the fields that fit are kept, the
    first one that does not is shortened to fit with "..." (and quoted as it then needs), the
    rest are dropped."""
    return _fit([f"{key}={value}" for key, value in fields], limit, size)


def fit_row(text: str, limit: int, size: Callable[[str], int]) -> str:
    """A report row (:func:`encode_fields`) of at most ``limit``: itself when it fits, else read
    back and shortened by fields as :func:`encode_fields` does."""
    if size(text) <= limit:
        return text
    return _fit(_items(text), limit, size)


def _items(text: str) -> List[str]:
    rows = list(csv.reader(io.StringIO(text, newline=""), **REPORT_CSV))
    return rows[0] if rows else []


def _fit(items: Sequence[str], limit: Optional[int], size: Callable[[str], int]) -> str:
    text = _row(items)
    if limit is None or size(text) <= limit:
        return text
    kept: list = []
    for item in items:
        if size(_row(kept + [item])) > limit:
            break
        kept.append(item)
    item = items[len(kept)]
    # The longest prefix that fits with "...", keeping at least the key, its "=" and a character.
    low, high = item.find("=") + 2, len(item) - 1
    best = None
    while low <= high:
        middle = (low + high) // 2
        if size(_row(kept + [item[:middle] + "..."])) <= limit:
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return _row(kept + [item[:best] + "..."]) if best is not None else _row(kept)


# What neither the health report's XML 1.0 nor a terminal may get: control characters but tab and
# the line breaks (C0 but \t \n \r, DEL, C1 but NEL), lone surrogates, and U+FFFE/U+FFFF.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")
_FIXED_KEYS = frozenset({"result", "reason", "agent", "step", "message", "vm_id", "timestamp",
                         "documentation_url"})
_FIELD_LIMIT = 128  # the identifying fields; only the message and details may be longer


def _clean(value: object, limit: int = DESCRIPTION_LIMIT) -> str:
    """What may go into a field: unsafe characters become spaces; ``|``, quotes and line
    breaks stay (the CSV quoting carries them)."""
    text = _UNSAFE.sub(" ", str(value)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _detail_key(key: object) -> str:
    """A detail may not pose as one of the fixed fields: ``reason`` becomes ``detail_reason``."""
    name = _clean(key, 64).replace("=", "_")
    return f"detail_{name}" if name in _FIXED_KEYS else name


def _now(timestamp: Optional[datetime.datetime]) -> str:
    when = timestamp or datetime.datetime.now(datetime.timezone.utc)
    return when.replace(microsecond=0).isoformat()


def encode_success(*, agent: str, vm_id: Optional[str],
                   timestamp: Optional[datetime.datetime] = None, warning: Optional[str] = None) -> str:
    """The success report (KVP ``PROVISIONING_REPORT``), as cloud-init writes it:
    ``result=success|agent=..|timestamp=..|vm_id=..``; ``warning``: one more field, last (what
    the platform asked for that nobody here does)."""
    fields = [("result", "success"), ("agent", _clean(agent, _FIELD_LIMIT)),
              ("timestamp", _now(timestamp)), ("vm_id", _clean(vm_id or "unknown", _FIELD_LIMIT))]
    if warning:
        fields.append(("warning", _clean(warning)))
    return encode_fields(fields)


def encode_description(
    error: AzprovError,
    *,
    agent: str,
    step: Optional[str] = None,
    vm_id: Optional[str] = None,
    timestamp: Optional[datetime.datetime] = None,
    extra: Optional[Mapping[str, object]] = None,
    limit: int = DESCRIPTION_LIMIT,
    size: Callable[[str], int] = len,
) -> str:
    """The failure report for ``error``: ``|``-separated ``key=value`` fields (see
    :func:`encode_fields`).

    ``result=error|reason=..|agent=..|step=..|<details>|message=..|vm_id=..|timestamp=..|
    documentation_url=..``, at most ``limit`` as measured by ``size`` (512 characters for the
    health Description; the KVP record passes 1022 UTF-8 bytes).  When too long, the free-text
    fields (message, then details) are shortened so the identifying fields survive.
    """
    head = [("result", "error"), ("reason", error.reason), ("agent", agent)]
    if step:
        head.append(("step", step))
    details = list(error.details.items()) + list((extra or {}).items())
    tail = [("vm_id", vm_id or "unknown"), ("timestamp", _now(timestamp))]
    tail.append(("documentation_url", DOCUMENTATION_URL))
    fields_head = [(k, _clean(v, _FIELD_LIMIT)) for k, v in head]
    fields_tail = [(k, _clean(v, _FIELD_LIMIT)) for k, v in tail]
    detail_fields = [(_detail_key(k), _clean(v)) for k, v in details]
    message = _clean(error.message)

    def joined(message: str, detail_fields: list) -> str:
        return encode_fields(fields_head + detail_fields + [("message", message)] + fields_tail)

    text = joined(message, detail_fields)
    if size(text) > limit:
        over = size(text) - limit
        keep = max(20, len(message) - over - 3)
        message = message[:keep] + "..."
        text = joined(message, detail_fields)
    while size(text) > limit and detail_fields:
        detail_fields = detail_fields[:-1]
        text = joined(message, detail_fields)
    if size(text) > limit:  # only if the fixed fields themselves are huge
        text = encode_fields(fields_head + detail_fields + [("message", message)] + fields_tail,
                             limit=limit, size=size)
    return text
