"""Reading a provisioning report row back, as the host does: ``csv.reader`` with the report's
dialect (``azprov.report.REPORT_CSV``), then ``key=value`` fields."""

from __future__ import annotations

import csv
import io
from typing import List, Tuple

from azprov.report import REPORT_CSV


def read_fields(text: str) -> List[Tuple[str, str]]:
    """The ``(key, value)`` fields of a report row, the inverse of ``encode_fields``."""
    rows = list(csv.reader(io.StringIO(text, newline=""), **REPORT_CSV))
    items = rows[0] if rows else []
    return [(key, value) for key, _, value in (item.partition("=") for item in items)]
