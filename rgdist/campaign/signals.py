"""Pre-emption signals: SIGTERM, SIGUSR1, SIGUSR2 set a flag; the runner finishes its
current step, writes a checkpoint and exits with ``exitcodes.REQUEUE``."""
from __future__ import annotations

import signal

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class PreemptionFlag:
    """Context manager that records a pre-emption request instead of dying."""

    def __init__(self, signals=PREEMPT_SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._old: dict = {}

    def _handler(self, signum, frame):  # noqa: ARG002
        self.received = signum

    @property
    def requested(self) -> bool:
        return self.received is not None

    def __enter__(self):
        for s in self.signals:
            self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()
        return False
