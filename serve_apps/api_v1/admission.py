"""Admission of CPU-bound online work in one API replica: what it can do at once, plus a short
queue; a request beyond both is answered 503 with Retry-After at once.

Without it, overload lengthens every request: the replica's threads share one interpreter, each
request gets a smaller slice, clients time out and retry, and what is served falls below what one
replica sustains. Shedding keeps the admitted requests at their normal latency, and Serve's
autoscaler (configs/serve.yaml) adds replicas while the load lasts. Workflows that call providers
wait on the network, not the CPU, and are paced by the provider limiters instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
        with self._lock:
            if self._admitted >= self.limit:
                raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                    "this replica is at capacity: retry in a moment",
                                    headers={"Retry-After": str(RETRY_AFTER_S)})
            self._admitted += 1
        try:
            with self._slots:
                yield
        finally:
            with self._lock:
                self._admitted -= 1
