"""Generates ``docs/fault-matrix.md`` from the rows and a recorded run::

    AZPROV_FAULT_MATRIX_RECORD=/tmp/matrix.json /usr/bin/python3 -m pytest tests/test_fault_matrix.py
    /usr/bin/python3 tests/support/fault_matrix/doc.py /tmp/matrix.json > docs/fault-matrix.md

``tests/test_fault_matrix.py::test_the_doc_lists_every_row`` keeps the two in step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from typing import List, Optional

_TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _path in (os.path.dirname(_TESTS), _TESTS):  # run as a script (rendering the doc) too
    if _path not in sys.path:
        sys.path.insert(0, _path)

from support.fault_matrix.harness import Row, play_two_at_once  # noqa: E402
from support.fault_matrix.rows import MATRIX  # noqa: E402

REPO = os.path.dirname(_TESTS)
DOC = os.path.join(REPO, "docs", "fault-matrix.md")


def doc_ids(text: str) -> List[str]:
    return re.findall(r"^\| *\d+ *\| *`([a-z0-9-]+)` *\|", text, re.M)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def observed_text(row: Row, seen: Optional[dict]) -> str:
    if not seen:
        return "not run"
    joiner = " and " if row.play is play_two_at_once else ", then "
    parts = ["exit " + joiner.join("SIGKILL" if e == -signal.SIGKILL else str(e) for e in seen["exits"])]
    parts.append("; ".join(seen["reports"]) if seen["reports"] else "no report")
    if not seen["reports"] and seen["failed_step"]:
        parts.append(f"failed in step {seen['failed_step']}")
    if row.deadline and row.deadline in seen.get("phases", {}):
        parts.append(f"phase {row.deadline} {seen['phases'][row.deadline]:.1f} s")
    if row.timed and row.timed in seen.get("phases", {}):
        parts.append(f"step {row.timed} took {seen['phases'][row.timed] * 1000:.0f} ms")
    if seen["traceback"]:
        parts.append("traceback in the log")
    if seen["temp_files"]:
        parts.append("temp files left: " + ", ".join(seen["temp_files"]))
    verdict = seen.get("verdict", "?")
    if row.xfail:
        parts.append(f"**{row.xfail}** (xfail)" if verdict != "pass" else "**passes: remove the xfail**")
    elif verdict != "pass":
        parts.append(f"**{verdict}**")
    else:
        parts.append("as expected")
    if row.found:
        parts.append(f"({row.found})")
    return "; ".join(parts)


def render(recorded: dict) -> str:
    rows = recorded.get("rows", {})
    lines = [
        "# Fault matrix",
        "",
        "Each row is a fault the fabric emulator plays (or a host condition) against the real",
        "`azprov provision --root DIR` on a scratch image tree, checked by `tests/test_fault_matrix.py`",
        "(`-m emulator`, root). For every row the test asserts the exit code, the health reports the",
        "emulator accepted (state, sub-status, and `reason=`/`step=` of a failure Description), the",
        "time against the row's deadline, the tree (no temp file, the state file only after Ready, the",
        "unit link present iff not provisioned, unchanged where the failure comes before any step (but for",
        "what every failure leaves on purpose: the run lock, the attempt history, the KVP report and the",
        "SSH host keys), the",
        "same as a clean run's where the run recovers) and the `-v` log (no traceback, no served key",
        "material, no request or response body, and no request the emulator found malformed or proxied).",
        "",
        "Deadline rows pass `--timeout` (it caps both phase deadlines) and name the phase that must give up:",
        "the test times that phase from the log (`step X: started` to `provisioning failed in step X`) and",
        "asserts it lasted the deadline, -0.5/+1 s; the whole process gets deadline + 2 s, as start-up and",
        "exit take their share on a loaded machine. Rows not about the shipped backoff",
        "use `[http] backoff_initial = 0.05, backoff_max = 0.5` through `--config`. A row marked xfail is",
        "a known bug: the test asserts the right behaviour and fails until the code is fixed.",
        "",
        "Regenerate after a change (the observed column and times come from that run):",
        "",
        "```sh",
        "AZPROV_FAULT_MATRIX_RECORD=/tmp/matrix.json /usr/bin/python3 -m pytest tests/test_fault_matrix.py",
        "/usr/bin/python3 tests/support/fault_matrix/doc.py /tmp/matrix.json > docs/fault-matrix.md",
        "```",
        "",
        f"Last recorded run: {len(rows)} of {len(MATRIX)} rows in {recorded.get('seconds', '?')} s "
        f"({recorded.get('jobs', '?')} at a time, 2 cores).",
        "",
        "| # | scenario | what the emulator does | expected outcome | observed outcome | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for number, r in enumerate(MATRIX, 1):
        seen = rows.get(r.id)
        elapsed = f"{seen['elapsed']:.1f}" if seen else ""
        lines.append(f"| {number} | `{r.id}` | {_cell(r.does)} | {_cell(r.expected_text())} | "
                     f"{_cell(observed_text(r, seen))} | {elapsed} |")
    lines += [
        "",
        "Times are seconds of the azprov process the row is about (the new run after a kill; the slower",
        "of two concurrent runs), from its first log line to its exit: the phase deadlines start there,",
        "after the interpreter has started. Other rows (and, on a shared machine, other work) run beside it.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        sys.stdout.write(render(json.load(handle)))
