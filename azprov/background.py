"""Work started in a thread now and collected later: the IMDS fetch beside the goal state, and
``ssh-keygen`` from the very start of the first-boot flow.

``result()`` waits for it, then returns its value or raises its exception in the caller's thread
(again on each call).  The thread is a daemon: when a run stops early (the goal state failed),
nobody waits for an IMDS answer; the flow always waits for the host keys itself.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from azprov import log as azlog


class Background:
    """``work()`` running in a thread from now on; its log records carry ``AZPROV_STEP=step``.
    ``give_up`` (optional) tells the work to stop early (ends the IMDS deadline)."""

    def __init__(self, work: Callable, *, step: str, give_up: Optional[Callable[[], None]] = None) -> None:
        self.started = time.monotonic()
        self._value = None
        self._error: Optional[BaseException] = None
        self._give_up = give_up
        self._thread = threading.Thread(target=self._run, args=(work, step), name=f"azprov-{step}", daemon=True)
        self._thread.start()

    @classmethod
    def finished(cls, value) -> "Background":
        """A value already at hand, with the same interface (no thread)."""
        done = cls.__new__(cls)
        done.started, done._value, done._error, done._give_up, done._thread = time.monotonic(), value, None, None, None
        return done

    def _run(self, work: Callable, step: str) -> None:
        azlog.set_thread_step(step)  # its log lines carry AZPROV_STEP=step, not the main thread's
        try:
            self._value = work()
        except BaseException as error:  # noqa: B902 - handed to the caller as it is
            self._error = error

    def done(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def wait(self, seconds: float) -> bool:
        """Wait until ``seconds`` after the start at most; whether the work is done."""
        if self._thread is not None:
            self._thread.join(max(0.0, self.started + seconds - time.monotonic()))
        return self.done()

    def give_up(self) -> None:
        """Tell the work to stop early (its result is not wanted any more)."""
        if self._give_up is not None:
            self._give_up()

    def result(self):
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
