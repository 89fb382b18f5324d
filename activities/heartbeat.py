"""Heartbeats for activities that wait on an outside system, so a worker that dies mid-call is noticed quickly.

An activity beats in the background while it awaits; the workflow sets a heartbeat timeout a few beats long. Without
it, an attempt lost with its worker is only retried after the whole start-to-close timeout.

The first beat comes after one interval, not at the start: the SDK sends an activity's first heartbeat to the server
at once (it throttles only the later ones), so a beat at the start cost every activity one more RPC and a write of
its state on the server (7-10% of the CPU of a plain turn, measured), although most activities (a projection write, an
answer from a fast model) end long before a heartbeat could tell anyone anything. Temporal's heartbeat timeout runs
from the start of an attempt, so an attempt whose worker dies before its first beat is retried just as soon.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity


@contextlib.asynccontextmanager
async def heartbeating(interval_seconds: float) -> AsyncIterator[None]:
    """Heartbeat every `interval_seconds`, the first after one interval, for as long as the context is open."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        # asyncio.wait, not `suppress(CancelledError)`: a cancellation of the activity itself (its timeout, or the
        # workflow cancelling the turn) arriving right here must propagate, not be mistaken for the beat's.
        await asyncio.wait([task])
