"""Usage records are queued in memory by the hot path and written in batches off it.

``put`` never blocks and never touches the database. A background task inserts batches;
when the database is slow or locked, records stay queued and are retried with backoff. Past
``max_pending`` queued records the gateway refuses new requests (``backlogged``) instead of
growing without bound; nothing already answered is ever dropped.
``close`` drains the queue (used on SIGTERM/SIGINT) so a graceful shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

from vectorengine.store.records import UsageRecord
from vectorengine.store.repository import Store

log = logging.getLogger(__name__)


class UsageWriter:
    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.25,
        max_pending: int = 200_000,
    ) -> None:
        self._store = store
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._queue: collections.deque[UsageRecord] = collections.deque()
        self._wake = asyncio.Event()
        self._writing = 0  # records in the batch being written
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failures = 0

    def put(self, record: UsageRecord) -> None:
        self._queue.append(record)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Records not yet in the database: queued, or in the batch being written."""
        return len(self._queue) + self._writing

    @property
    def backlogged(self) -> bool:
        """So many records wait for the database that new requests should be refused."""
        return len(self._queue) + self._writing >= self._max_pending

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-writer")

    async def _run(self) -> None:
        backoff = self._interval
        while True:
            # A batch is written when it is full, else once the interval has passed; never
            # straight after a write that left less than a batch. Writing whatever arrived
            # during the previous write makes, under steady load, batches of a few records,
            # each a transaction of its own (measured: 2.4 records per batch).
            if len(self._queue) < self._batch_size:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation
                # that lands as the event fires, and close() would then wait for this loop forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                continue
            if await self._write_batch():
                backoff = self._interval
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _write_batch(self) -> bool:
        n = min(len(self._queue), self._batch_size)
        batch = [self._queue.popleft() for _ in range(n)]
        self._writing = n
        try:
            await self._store.insert_usage(batch)
        except asyncio.CancelledError:
            self._queue.extendleft(reversed(batch))
            raise
        except Exception as exc:
            self._queue.extendleft(reversed(batch))
            self.failures += 1
            log.warning("writing %d usage records failed, will retry: %s", n, exc)
            return False
        finally:
            self._writing = 0
        self.written += n
        return True

    async def close(self, timeout_s: float = 15.0) -> None:
        """Stop the background task and write everything still queued (retrying until the deadline)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait((self._task,))  # its end; a cancellation of close() itself propagates
            self._task = None
        deadline = time.monotonic() + timeout_s
        while self._queue:
            if not await self._write_batch():
                if time.monotonic() > deadline:
                    log.error("shutdown: %d usage records could not be written", len(self._queue))
                    return
                await asyncio.sleep(0.2)
