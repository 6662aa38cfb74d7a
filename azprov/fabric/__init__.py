"""The fabric emulator: an Azure WireServer and IMDS over real HTTP, for tests and image builds.

``FabricEmulator`` serves both endpoints (each on its own listener), validates what a guest sends
(headers, the health report XML, the identifiers it echoes), logs every request as one JSON
record, and plays the faults of a :class:`Scenario`.  See docs/fabric-emulator.md.

Standard library only (plus azprov's own parsers); importing this package never imports
``requests``.
"""

from __future__ import annotations

from azprov.fabric.scenario import Scenario, ScenarioError, Step, load_scenario
from azprov.fabric.server import FabricEmulator

__all__ = ["FabricEmulator", "Scenario", "ScenarioError", "Step", "load_scenario"]
