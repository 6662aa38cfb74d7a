"""The fault matrix: scripted fabric faults and hostile hosts against the real ``azprov provision``.

The rows are in ``support/fault_matrix/rows.py``, what every row is checked for in
``support/fault_matrix/harness.py`` (:func:`check_row`), and ``docs/fault-matrix.md`` is generated
by ``support/fault_matrix/doc.py`` from the rows and a recorded run.

One parametrized test checks the rows.  The runs themselves are started by a module fixture, a
few at a time (``AZPROV_FAULT_MATRIX_JOBS``, default 3), longest first, so the 30-second and
deadline scenarios wait side by side; each test then waits for its own row.  Only the selected
rows run (``-k`` works as usual).  ``AZPROV_FAULT_MATRIX_RECORD=FILE`` records what each row did,
for the doc.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict

import pytest

from support.fault_matrix.doc import DOC, doc_ids
from support.fault_matrix.harness import Matrix, Row, check_row, observe
from support.fault_matrix.rows import MATRIX

pytestmark = pytest.mark.emulator
OBSERVED: Dict[str, dict] = {}


@pytest.fixture(scope="module")
def matrix(request, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: useradd --root, chown, mount")
    selected = [item.callspec.params["row"] for item in request.session.items
                if getattr(item, "callspec", None) is not None and item.module is request.module
                and isinstance(item.callspec.params.get("row"), Row)]
    jobs = int(os.environ.get("AZPROV_FAULT_MATRIX_JOBS", "3"))
    runner = Matrix(selected, str(tmp_path_factory.mktemp("fault-matrix")), jobs)
    try:
        yield runner
    finally:
        runner.close()
        record = os.environ.get("AZPROV_FAULT_MATRIX_RECORD")
        if record:
            with open(record, "w") as handle:
                json.dump({"rows": OBSERVED, "seconds": round(time.monotonic() - runner.started, 1),
                           "jobs": jobs}, handle, indent=1, sort_keys=True)


def _param(r: Row):
    marks = [pytest.mark.xfail(strict=True, reason=r.xfail)] if r.xfail else []
    return pytest.param(r, id=r.id, marks=marks)


@pytest.mark.parametrize("row", [_param(r) for r in MATRIX])
def test_fault(row: Row, matrix: Matrix) -> None:
    run = matrix.result(row.id)
    OBSERVED[row.id] = observe(run)
    try:
        check_row(row, run, matrix.reference)
    except AssertionError as exc:
        OBSERVED[row.id]["verdict"] = "fail: " + (str(exc).splitlines() or ["?"])[0][:200]
        raise
    OBSERVED[row.id]["verdict"] = "pass"


def test_the_matrix_has_enough_rows() -> None:
    assert len(MATRIX) >= 25


def test_the_doc_lists_every_row() -> None:
    with open(DOC) as handle:
        ids = doc_ids(handle.read())
    assert ids == [r.id for r in MATRIX], "regenerate docs/fault-matrix.md (see this module's docstring)"
