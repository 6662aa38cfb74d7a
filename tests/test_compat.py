"""Python 3.9 compatibility, checked statically with vermin (no 3.9 interpreter here).

azprov runs under the image's own python3 (Debian 11 and RHEL 9 ship 3.9), so nothing newer may
slip in: syntax (``match``, ``X | Y`` unions at run time, parenthesized context managers) or
library (``tomllib``, new keyword arguments).  ``tomllib`` is excluded: every import of it falls
back to ``tomli`` before 3.11 (a dependency there, see pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from support.cli import REPO

VERMIN_BIN = shutil.which("vermin", path=os.path.dirname(sys.executable)) or shutil.which("vermin")
VERMIN = [VERMIN_BIN or "vermin", "-t=3.9-", "--no-tips", "--violations", "--eval-annotations",
          "--exclude", "tomllib", "--no-parse-comments"]

pytestmark = pytest.mark.skipif(VERMIN_BIN is None,
                                reason="vermin is in the test extras: pip install -e '.[test]'")


def vermin(*paths: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VERMIN, *paths], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_azprov_runs_on_python_3_9():
    result = vermin("azprov", "packaging", "benchmarks", "scripts")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("code", [
    pytest.param("match x:\n    case 1:\n        pass\n",  # 3.10 syntax
                 marks=pytest.mark.skipif(sys.version_info < (3, 10), reason=(
                     "vermin parses with the running interpreter's ast, which cannot read 3.10 "
                     "syntax before 3.10; this run of the suite on 3.9 is the real check"))),
    "from itertools import pairwise\n",  # 3.10 library
    "print(list(zip([1], [2], strict=True)))\n",  # 3.10 keyword argument
])
def test_the_check_catches_newer_python(tmp_path, code):
    (tmp_path / "new.py").write_text("from typing import Optional\n" + code)
    result = vermin(str(tmp_path / "new.py"))
    assert result.returncode != 0 and "Target versions not met" in result.stdout, result.stdout + result.stderr
