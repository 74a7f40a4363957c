"""Capped, jittered exponential back-off, shared by informers (reconnects) and work queues (requeues)."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``initial, initial*factor, …`` capped at ``cap``; each one stretched by up to ``jitter``.

    Jitter spreads reconnects of many clients after an apiserver restart (they would otherwise
    all come back on the same tick). The stretched delay never exceeds ``cap``.
    """

    def __init__(self, *, initial: float = 0.5, cap: float = 30.0, factor: float = 2.0, jitter: float = 0.2,
                 rng: random.Random | None = None) -> None:
        if initial <= 0 or cap < initial or factor < 1 or not 0 <= jitter <= 1:
            raise ValueError("need 0 < initial <= cap, factor >= 1 and 0 <= jitter <= 1")
        self.initial, self.cap, self.factor, self.jitter = initial, cap, factor, jitter
        self._rng = rng or random.Random()
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        base = min(self.cap, self.initial * self.factor ** min(self.failures, 64))
        self.failures += 1
        return min(self.cap, base * (1 + self.jitter * self._rng.random()))

    def reset(self) -> None:
        """Called after a success: the next failure starts again from ``initial``."""
        self.failures = 0
