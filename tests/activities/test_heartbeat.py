"""Activity heartbeats (activities/heartbeat.py): none from an activity that ends within one interval (the SDK sends
an activity's first heartbeat to the server at once, so a beat at the start cost every activity an RPC), and beats
at each interval while one waits, none after it ends."""

from __future__ import annotations

import asyncio

from temporalio.testing import ActivityEnvironment

from activities.heartbeat import heartbeating


async def test_an_activity_that_ends_within_an_interval_sends_no_heartbeat() -> None:
    environment = ActivityEnvironment()
    beats: list[tuple[object, ...]] = []
    environment.on_heartbeat = lambda *details: beats.append(details)

    async def quick() -> str:
        async with heartbeating(60.0):
            await asyncio.sleep(0)
        return "done"

    assert await environment.run(quick) == "done"
    assert beats == []


async def test_an_activity_that_waits_beats_until_it_ends() -> None:
    environment = ActivityEnvironment()
    beats = 0
    two_beats = asyncio.Event()

    def on_heartbeat(*details: object) -> None:
        nonlocal beats
        beats += 1
        if beats >= 2:
            two_beats.set()

    environment.on_heartbeat = on_heartbeat

    async def waiting() -> int:
        async with heartbeating(0.01):
            await asyncio.wait_for(two_beats.wait(), timeout=30)
        at_end = beats
        await asyncio.sleep(0.05)  # a beat still running would show here
        assert beats == at_end
        return at_end

    assert await environment.run(waiting) >= 2
