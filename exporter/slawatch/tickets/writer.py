"""Group commit: concurrent webhook requests share one SQLite transaction.

Each request still gets its response only after the transaction that holds its
events has committed, so a 2xx always means "stored". Under load, the
requests that arrive while one transaction runs are written together in the
next one, which spreads the fixed cost of a transaction over many requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from .events import TicketEvent
from .store import IngestResult, TicketStore

logger = logging.getLogger("slawatch.tickets")

MAX_GROUP_EVENTS = 20000


class GroupWriter:
    """Serialise writes to one store and batch the requests that wait.

    Usage:

        writer = GroupWriter(store)
        result = await writer.ingest(events)
        await writer.close()
    """

    def __init__(self, store: TicketStore):
        self.store = store
        self._pending: deque[tuple[list[TicketEvent], asyncio.Future]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def ingest(self, events: list[TicketEvent]) -> IngestResult:
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        self._pending.append((events, future))
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for _, future in self._pending:
            if not future.done():
                future.set_exception(RuntimeError("the ticket store is closing"))
        self._pending.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                group, size = [], 0
                while self._pending and (not group or size + len(self._pending[0][0]) <= MAX_GROUP_EVENTS):
                    events, future = self._pending.popleft()
                    group.append((events, future))
                    size += len(events)
                try:
                    results = await loop.run_in_executor(None, self.store.ingest_groups, [e for e, _ in group])
                except Exception as error:  # every request of the failed transaction gets the error
                    logger.error("Failed to store ticket events requests=%d events=%d err=%s", len(group), size,
                                 error)
                    for _, future in group:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(group, results):
                    if not future.done():
                        future.set_result(result)
