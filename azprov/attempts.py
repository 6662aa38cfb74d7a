"""The provisioning history: every attempt, ``/var/lib/azprov/attempts.json``.

``azprov provision`` records an attempt as ``running`` before it contacts the fabric, and
rewrites it with its outcome (``succeeded``, ``failed``, ``refused``), the step, the reason and
the message when it ends, and with the warnings a person must act on (a requested password that
could not be set) as they come.  It lives beside the state, so it survives reboots (``azprov status``
shows the last attempt after a failed first boot) and ``azprov deprovision`` clears it.  An
attempt still ``running`` after its process has gone was killed (power cut, timeout).

The newest :data:`KEEP` attempts are kept.  Writing it is best effort: a failure is logged,
never fatal to provisioning.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from typing import List, Optional, Tuple

from azprov.errors import AzprovError, Refused, StepFailed
from azprov.host import Host
from azprov.state import open_state_dir

log = logging.getLogger(__name__)

HISTORY_FILE = "/var/lib/azprov/attempts.json"
HISTORY_LIMIT = 256 * 1024
KEEP = 20
OUTCOMES = ("running", "succeeded", "failed", "refused")
_TEXT_LIMIT = 512
_WARNINGS_KEPT = 10


@dataclass(frozen=True)
class Attempt:
    """One provisioning attempt as recorded for ``azprov status``."""

    at: str  # ISO 8601, UTC: when it started
    outcome: str  # one of OUTCOMES
    step: Optional[str] = None
    reason: Optional[str] = None
    message: Optional[str] = None
    vm_id: Optional[str] = None
    pid: Optional[int] = None
    finished_at: Optional[str] = None
    warnings: Tuple[str, ...] = ()  # what a person must act on, though provisioning went on

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> "Attempt":
        if not isinstance(data, dict):
            raise ValueError("an attempt is not a JSON object")
        known = {name: data.get(name) for name in cls.__dataclass_fields__}
        if not isinstance(known["at"], str) or known["outcome"] not in OUTCOMES:
            raise ValueError("an attempt has no time or an unknown outcome")
        for name in ("step", "reason", "message", "vm_id", "finished_at"):
            if known[name] is not None and not isinstance(known[name], str):
                raise ValueError(f"an attempt's {name} is not a string")
        warnings = known["warnings"] or ()
        if not isinstance(warnings, (list, tuple)) or not all(isinstance(w, str) for w in warnings):
            raise ValueError("an attempt's warnings are not a list of strings")
        known["warnings"] = tuple(warnings)
        if known["pid"] is not None and (not isinstance(known["pid"], int) or isinstance(known["pid"], bool)):
            known["pid"] = None
        return cls(**known)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def load(host: Host) -> List[Attempt]:
    """Every recorded attempt, oldest first; a damaged history counts as empty (logged)."""
    try:
        data = host.read_file(HISTORY_FILE, limit=HISTORY_LIMIT)
    except Exception as exc:  # unreadable, symlink, too large
        log.warning("ignoring %s: %s", HISTORY_FILE, exc)
        return []
    if not data:
        return []
    try:
        document = json.loads(data.decode("utf-8"))
        items = document.get("attempts") if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise ValueError("no list of attempts")
        return [Attempt.from_dict(item) for item in items]
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        log.warning("ignoring damaged %s: %s", HISTORY_FILE, exc)
        return []


def last(host: Host) -> Optional[Attempt]:
    history = load(host)
    return history[-1] if history else None


def _save(host: Host, history: List[Attempt]) -> None:
    body = json.dumps({"attempts": [a.to_dict() for a in history[-KEEP:]]}, indent=2, sort_keys=True)
    with open_state_dir(host) as directory:
        directory.write("attempts.json", (body + "\n").encode(), mode=0o600)


def _short(text: Optional[str]) -> Optional[str]:
    return None if text is None else text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT - 3] + "..."


class Recorder:
    """Records one run: :meth:`begin` (running), then :meth:`succeeded` or :meth:`failed`."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.attempt: Optional[Attempt] = None

    def _put(self, attempt: Attempt) -> None:
        try:
            history = load(self.host)
            if self.attempt is not None and history and history[-1] == self.attempt:
                history[-1] = attempt
            else:
                history.append(attempt)
            _save(self.host, history)
        except (StepFailed, OSError) as exc:
            log.warning("could not record the attempt in %s: %s", HISTORY_FILE, exc)
        self.attempt = attempt

    def begin(self, vm_id: Optional[str] = None) -> None:
        self._put(Attempt(at=now(), outcome="running", step="identity", vm_id=vm_id, pid=os.getpid()))

    def succeeded(self, vm_id: Optional[str]) -> None:
        self._finish("succeeded", step=None, vm_id=vm_id)

    def failed(self, error: AzprovError, step: Optional[str], vm_id: Optional[str]) -> None:
        self._finish("refused" if isinstance(error, Refused) else "failed", step=step, vm_id=vm_id,
                     reason=error.reason, message=_short(str(error)))

    def warn(self, message: str) -> None:
        """Add ``message`` to the attempt's warnings (``azprov status`` shows them)."""
        if self.attempt is None or len(self.attempt.warnings) >= _WARNINGS_KEPT:
            return
        self._put(replace(self.attempt, warnings=self.attempt.warnings + (_short(message),)))

    def discard(self) -> None:
        """Forget the attempt begun: it turned out there was nothing to provision."""
        if self.attempt is None:
            return
        try:
            history = load(self.host)
            if history and history[-1] == self.attempt:
                if history[:-1]:
                    _save(self.host, history[:-1])
                else:
                    clear(self.host)
        except (StepFailed, OSError) as exc:
            log.warning("could not update %s: %s", HISTORY_FILE, exc)
        self.attempt = None

    def _finish(self, outcome: str, **fields) -> None:
        if self.attempt is None:
            return
        fields["vm_id"] = fields.get("vm_id") or self.attempt.vm_id
        self._put(replace(self.attempt, outcome=outcome, finished_at=now(), **fields))


def clear(host: Host) -> bool:
    return host.remove(HISTORY_FILE)
