"""Heartbeats for activities that wait on an outside system, so a worker that dies mid-call is noticed quickly.

An activity beats in the background while it awaits; the workflow sets a heartbeat timeout a few beats long. Without
it, an attempt lost with its worker is only retried after the whole start-to-close timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity


@contextlib.asynccontextmanager
async def heartbeating(interval_seconds: float) -> AsyncIterator[None]:
    """Heartbeat every `interval_seconds` for as long as the context is open."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval_seconds)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        # asyncio.wait, not `suppress(CancelledError)`: a cancellation of the activity itself (its timeout, or the
        # workflow cancelling the turn) arriving right here must propagate, not be mistaken for the beat's.
        await asyncio.wait([task])
