"""Admission of CPU-bound online work in one API replica: what it can do at once, plus a short
queue; a request beyond both is answered 503 with Retry-After at once.

Without it, overload lengthens every request: the replica's threads share one interpreter, each
request gets a smaller slice, clients time out and retry, and what is served falls below what one
replica sustains. Shedding keeps the admitted requests at their normal latency, and Serve's
autoscaler (configs/serve.yaml) adds replicas while the load lasts. Workflows that call providers
wait on the network, not the CPU, and are paced by the provider limiters instead.

Small requests are worked on the event loop itself, one at a time (`admit_on_loop`); larger ones in
the thread pool, `running` at once (`admit`). Both count against the same limit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from fastapi import HTTPException, status

RETRY_AFTER_S = 1


class Admission:
    """`running` requests at once; up to `queued` more wait for one of them; the rest are refused."""

    def __init__(self, running: int, queued: int) -> None:
        self._slots = threading.Semaphore(running)
        self._lock = threading.Lock()
        self._admitted = 0  # running or waiting
        self.limit = running + queued

    @contextmanager
    def admit(self) -> Iterator[None]:
        """For work in a thread of the pool: waits for one of the `running` slots."""
        self._enter()
        try:
            with self._slots:
                yield
        finally:
            self._leave()

    @asynccontextmanager
    async def admit_on_loop(self) -> AsyncIterator[None]:
        """For work done on the event loop, which runs one such request at a time. It yields to the
        loop once before its work, so that the requests already waiting on the loop count (and those
        past the limit are refused) before this one holds it: the count is the loop's queue."""
        self._enter()
        try:
            await asyncio.sleep(0)
            yield
        finally:
            self._leave()

    def _enter(self) -> None:
        with self._lock:
            if self._admitted >= self.limit:
                raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                    "this replica is at capacity: retry in a moment",
                                    headers={"Retry-After": str(RETRY_AFTER_S)})
            self._admitted += 1

    def _leave(self) -> None:
        with self._lock:
            self._admitted -= 1
