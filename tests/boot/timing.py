"""First-boot timing breakdown of one booted image, read from outside the container.

Three clocks, brought onto one (CLOCK_MONOTONIC, which a container shares with its host):

- systemd's unit timestamps, recorded inside the booted image by the recorder unit
  (``systemctl show``: ``...TimestampMonotonic``, microseconds): when the early stage
  (``azprov-hostname.service``, before the network) started and exited, when azprov's process started
  (``ExecMainStartTimestampMonotonic``), when systemd got READY=1 (a ``Type=notify`` unit becomes
  active then: ``ActiveEnterTimestampMonotonic``), when the process exited, when sshd was started
  and ready (Debian's ``ssh.service`` is ``Type=notify`` too), when user sessions were permitted;
  PID 1's own start (``UserspaceTimestampMonotonic``) is the zero of "from boot";
- the journal: azprov's own ``step NAME: started`` / ``step NAME: done`` lines
  (``__MONOTONIC_TIMESTAMP``, when journald received them) and its first line;
- the emulator's request log, whose ``time`` is wall-clock (milliseconds): it is converted with
  the journal's realtime/monotonic pair (both taken by journald at the same moment).

Figures only: nothing here asserts a duration.  :func:`breakdown` returns a :class:`Timeline`;
``Timeline.format()`` is what the boot test prints and ``benchmarks/first_boot.py`` aggregates.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

UNIT = "azprov.service"
_STEP = re.compile(r"^step (\w+): (started|done)( in the background)?")

# Milestones, in the order they are printed (the steps go between "first request" and "READY=1").
MILESTONES = (
    ("unit_start", "azprov.service process started"),
    ("first_log", "azprov's first journal line"),
    ("first_request", "first request reached the fabric"),
    ("ready_notify", "READY=1 (systemd: azprov active)"),
    ("ready_received", "Ready received by the fabric"),
    ("unit_exit", "azprov process exited"),
    ("sessions", "user sessions permitted"),
    ("sshd_start", "sshd process started"),
    ("sshd_ready", "sshd started (ready)"),
    # the early stage, before the network (azprov-hostname.service: the disc's host name)
    ("early_start", "azprov-hostname.service started"),
    ("early_exit", "azprov-hostname.service finished"),
)
EARLY = ("early_start", "early_exit")


@dataclass
class Timeline:
    """Milestones and step spans of one boot, in milliseconds since PID 1 started."""

    milestones: Dict[str, float] = field(default_factory=dict)
    steps: List[tuple] = field(default_factory=list)  # (name, start ms, end ms or None)

    @property
    def unit_start(self) -> Optional[float]:
        return self.milestones.get("unit_start")

    def span(self, start: str, end: str) -> Optional[float]:
        a, b = self.milestones.get(start), self.milestones.get(end)
        return None if a is None or b is None else b - a

    def figures(self) -> Dict[str, float]:
        """Flat figures for a benchmark: each milestone from unit start (the unit start itself
        from boot) and each step's duration."""
        out: Dict[str, float] = {}
        start = self.unit_start
        if start is not None:
            out["unit start (from boot)"] = start
            for key, label in MILESTONES[1:]:
                if key in self.milestones and key not in EARLY:
                    out[label] = self.milestones[key] - start
        early = self.span("early_start", "early_exit")
        if early is not None:
            out["early stage takes (azprov-hostname.service)"] = early
        for name, begin, end in self.steps:
            if end is not None:
                out[f"step {name}"] = end - begin
        return out

    def format(self) -> str:
        start = self.unit_start
        lines = [f"{'first-boot timing (ms)':<42} {'from boot':>10} {'from unit':>10} {'takes':>8}"]

        def row(label: str, at: Optional[float], takes: Optional[float] = None, indent: str = "") -> None:
            shown_at = f"{at:10.1f}" if at is not None else f"{'-':>10}"
            since = f"{at - start:10.1f}" if at is not None and start is not None else f"{'-':>10}"
            took = f"{takes:8.1f}" if takes is not None else ""
            lines.append(f"{indent + label:<42} {shown_at} {since} {took}")

        rows = [(at, 0, labels, None) for labels, at in
                ((label, self.milestones.get(key)) for key, label in MILESTONES) if at is not None]
        rows += [(begin, 1, f"step {name}", None if end is None else end - begin)
                 for name, begin, end in self.steps]
        for at, is_step, label, takes in sorted(rows, key=lambda r: (r[0], r[1])):
            row(label, at, takes, indent="  " if is_step else "")
        # No "less host keys" figure: ssh-keygen runs in the background from the flow's start, so
        # subtracting "step host_keys" (the wait for it before READY=1) does not give Ready
        # without key generation, which competed for the CPUs all along.  Boot a tree that has
        # its keys for that (benchmarks/first_boot.py --host-keys-present).
        early = self.span("early_start", "early_exit")
        if early is not None:
            lines.append(f"azprov-hostname.service (before the network) takes: {early:.1f} ms")
        unit_to_ready = self.span("unit_start", "ready_received")
        if unit_to_ready is not None:
            lines.append(f"unit start -> Ready received: {unit_to_ready:.1f} ms")
        return "\n".join(lines)


def _us(value: Optional[str]) -> Optional[float]:
    """A systemd ``...TimestampMonotonic`` (µs, "0" when it never happened) in µs, or None."""
    if value in (None, "", "0"):
        return None
    return float(value)


def _offset_us(journal: Sequence[dict]) -> Optional[float]:
    """realtime − monotonic (µs) of this boot, from any journal entry carrying both."""
    for entry in journal:
        if "__REALTIME_TIMESTAMP" in entry and "__MONOTONIC_TIMESTAMP" in entry:
            return float(entry["__REALTIME_TIMESTAMP"]) - float(entry["__MONOTONIC_TIMESTAMP"])
    return None


def _request_us(record: dict, offset: float) -> float:
    when = datetime.datetime.fromisoformat(record["time"])
    return when.timestamp() * 1e6 - offset


def _close(timeline: Timeline, index: int, at: Optional[float]) -> None:
    name, begin, _ = timeline.steps[index]
    timeline.steps[index] = (name, begin, at)


def breakdown(record: dict, journal: Sequence[dict], requests: Sequence[dict]) -> Timeline:
    """The timeline of one boot: ``record`` is the recorder's JSON, ``journal`` this boot's
    entries, ``requests`` the emulator's request log of this boot."""
    units = record.get("units", {})
    azprov = units.get(UNIT, {})
    ssh = units.get("ssh.service", {})
    sessions = units.get("systemd-user-sessions.service", {})
    early = units.get("azprov-hostname.service", {})
    manager = record.get("manager", {})
    zero = _us(manager.get("UserspaceTimestampMonotonic"))
    if zero is None:  # an older recorder: the boot's first journal entry instead
        zero = min((float(e["__MONOTONIC_TIMESTAMP"]) for e in journal if "__MONOTONIC_TIMESTAMP" in e),
                   default=0.0)

    def ms(us: Optional[float]) -> Optional[float]:
        return None if us is None else (us - zero) / 1000

    timeline = Timeline()
    marks = {
        "unit_start": _us(azprov.get("ExecMainStartTimestampMonotonic")),
        "ready_notify": _us(azprov.get("ActiveEnterTimestampMonotonic")),
        "unit_exit": _us(azprov.get("ExecMainExitTimestampMonotonic")),
        "sessions": _us(sessions.get("ActiveEnterTimestampMonotonic")),
        "sshd_start": _us(ssh.get("ExecMainStartTimestampMonotonic")),
        "sshd_ready": _us(ssh.get("ActiveEnterTimestampMonotonic")),
        "early_start": _us(early.get("ExecMainStartTimestampMonotonic")),
        "early_exit": _us(early.get("ExecMainExitTimestampMonotonic")),
    }
    own = [e for e in journal if e.get("_SYSTEMD_UNIT") == UNIT and e.get("SYSLOG_IDENTIFIER") == "azprov"]
    if own:
        marks["first_log"] = float(own[0]["__MONOTONIC_TIMESTAMP"])
    offset = _offset_us(journal)
    if offset is not None and requests:
        marks["first_request"] = _request_us(requests[0], offset)
        ready = [r for r in requests if r.get("endpoint") == "health"
                 and (r.get("report") or {}).get("state") == "Ready" and r.get("status") == 200]
        if ready:
            marks["ready_received"] = _request_us(ready[0], offset)
    timeline.milestones = {key: ms(us) for key, us in marks.items() if us is not None}

    open_steps: Dict[str, float] = {}
    background: Dict[str, int] = {}  # step -> index in timeline.steps of its background span
    for entry in own:
        message = str(entry.get("MESSAGE", ""))
        at = ms(float(entry["__MONOTONIC_TIMESTAMP"]))
        match = _STEP.match(message)
        owner = entry.get("AZPROV_STEP")
        if owner in background and not match:  # the background work's last own line ends it
            _close(timeline, background[owner], at)
        if not match:
            continue
        name, what, in_background = match.groups()
        if what == "started" and in_background:  # e.g. ssh-keygen -A from the start of the run
            background[name] = len(timeline.steps)
            timeline.steps.append((f"{name} (background)", at, None))
        elif what == "started":
            open_steps[name] = len(timeline.steps)
            timeline.steps.append((name, at, None))
        elif name in open_steps:
            _close(timeline, open_steps.pop(name), at)
            if name in background and timeline.steps[background[name]][2] is None:
                _close(timeline, background[name], at)  # no line of its own: ended by its wait
    return timeline
