"""Shared fixtures.  Helpers live in tests/support/ (imported as ``support.*``)."""

from __future__ import annotations

import os
import sys

import pytest

# tests/ on the module path whatever pytest's import mode or package layout: ``support`` is
# imported by name.
_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support.scratch_root import make_scratch_root  # noqa: E402


def pytest_collection_modifyitems(items):
    """``-m property`` selects the hypothesis property tests, which live with their modules."""
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)


@pytest.fixture
def scratch_root(tmp_path) -> str:
    """A fresh minimal Debian-like image tree (see support/scratch_root.py)."""
    return make_scratch_root(str(tmp_path / "root"))


@pytest.fixture
def config(tmp_path):
    """azprov's built-in default configuration (no file read)."""
    from azprov.config import load_config
    from azprov.host import Host

    empty = tmp_path / "no-config"
    empty.mkdir(exist_ok=True)
    return load_config(Host(str(empty)))


@pytest.fixture
def emulator():
    """``emulator(scenario_dict)`` starts a fabric emulator on loopback, stopped after the test."""
    from azprov.fabric import FabricEmulator, Scenario

    started = []

    def start(scenario=None):
        fabric = FabricEmulator(Scenario.from_dict(scenario or {}), wireserver=("127.0.0.1", 0),
                                imds=("127.0.0.1", 0))
        fabric.start()
        started.append(fabric)
        return fabric

    yield start
    for fabric in started:
        fabric.stop()
