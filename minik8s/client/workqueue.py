"""A keyed asyncio work queue with the guarantees of Kubernetes' ``workqueue``.

Controllers put *keys* (``namespace/name``) in, never objects: the worker reads the current
object from the informer's cache when it gets round to the key (level-triggered).

Guarantees::

    add(k) while k waits in the queue      → nothing (one entry per key)
    add(k) while a worker processes k      → k is queued again only after done(k)
    get()                                  → never hands out a key that is being processed
    add_rate_limited(k)                    → add after a per-key exponential delay; forget(k) resets it
    shut_down()                            → get() drains what is queued, then raises QueueShutDown

Typical worker (see :func:`run_worker`)::

    key = await queue.get()
    try:
        await sync(key)
        queue.forget(key)
    except Exception:
        queue.add_rate_limited(key)
    finally:
        queue.done(key)
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)


class QueueShutDown(Exception):
    """``get()`` on a queue that is shut down and empty."""


class ItemExponentialRateLimiter:
    """Per-key delay ``base * 2**failures`` capped at ``cap``; ``forget`` resets a key."""

    def __init__(self, *, base: float = 0.005, cap: float = 60.0) -> None:
        self.base, self.cap = base, cap
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return min(self.cap, self.base * 2 ** min(n, 64))

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        return self._failures.get(key, 0)


class WorkQueue:
    """See the module docstring. All methods but :meth:`get` are plain functions (callable from handlers).

    Must be used from one event loop (the one running when the first delayed add is scheduled).
    """

    def __init__(self, *, rate_limiter: ItemExponentialRateLimiter | None = None) -> None:
        self.rate_limiter = rate_limiter or ItemExponentialRateLimiter()
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()  # keys that need processing (queued, or re-added while processing)
        self._processing: set[Hashable] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._shutting_down = False

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def add(self, key: Hashable) -> None:
        """Queue ``key`` unless it is already queued; if it is being processed, queue it after ``done``."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        self._queue.append(key)
        self._wake_one()

    def add_after(self, key: Hashable, delay: float) -> None:
        """``add(key)`` after ``delay`` seconds. An earlier pending delayed add of the key wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        if existing is not None:
            if existing.when() <= loop.time() + delay:
                return
            existing.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def add_rate_limited(self, key: Hashable) -> None:
        """Requeue ``key`` after its back-off (doubling on each call until :meth:`forget`)."""
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: Hashable) -> None:
        """``key`` succeeded: its next failure starts from the smallest back-off again."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: Hashable) -> int:
        return self.rate_limiter.num_requeues(key)

    async def get(self) -> Hashable:
        """The next key; the caller must call :meth:`done` with it. Raises ``QueueShutDown``."""
        while True:
            if self._queue:
                key = self._queue.popleft()
                self._processing.add(key)
                self._dirty.discard(key)
                return key
            if self._shutting_down:
                raise QueueShutDown()
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                elif self._queue:
                    self._wake_one()  # we were woken for a key we will not take: pass the turn on
                raise

    def done(self, key: Hashable) -> None:
        """Processing of ``key`` finished; if it was added meanwhile, it goes back in the queue."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wake_one()

    def shut_down(self) -> None:
        """Stop taking keys and cancel delayed adds; waiting ``get()`` calls drain, then raise."""
        self._shutting_down = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _wake_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return


async def run_worker(queue: WorkQueue, sync: Callable[[Hashable], Awaitable[None]], *,
                     name: str = "worker") -> None:
    """Process keys until the queue shuts down: success forgets the key, an exception requeues it
    with back-off (logged). Cancel the task (or shut the queue down) to stop."""
    while True:
        try:
            key = await queue.get()
        except QueueShutDown:
            return
        try:
            await sync(key)
            queue.forget(key)
        except asyncio.CancelledError:
            queue.done(key)
            raise
        except Exception:
            log.exception("%s: sync of %s failed; requeued", name, key)
            queue.add_rate_limited(key)
        queue.done(key)
