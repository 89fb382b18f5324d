"""Where the conversation pauses, so the update that delivers an input can answer with what the input caused.

The conversation runs until it waits on something outside the workflow: an input (a user message, a human
decision, the IDE's result), an activity (the LLM, a projection write) or a timer. An input that ends a wait wakes
it; it then runs, publishing events, until its next pause, all within one workflow task. Its update handler waits
for that pause and returns those events with the receipt (`InputReceipt.events`): an approval's re-emitted
`tool_call`, a rejection's `tool_result`, a switch's `agent_switched`. A gateway relays them without a second
round trip to the workflow (a stream poll is one update and one workflow task more).

An input may also ask to be answered with its first events however long they take (`TurnInput.wait_for_events`,
which the HTTP API sets): its handler then waits through the LLM call too, until an event is published or the
conversation waits for the next input, and a plain turn needs no poll of the stream at all (one workflow task,
one update and five history events fewer).

Only waits for an input carry the condition that ends them, so an input that ends none (a result that arrived
early, a revocation) is answered at once instead of waiting for a pause that may be hours away. Every pause is
counted, so a missed one only delays an answer to the next pause, never loses it.
"""

from __future__ import annotations

from collections.abc import Callable


class Pauses:
    """Counts the conversation's pauses and knows which input, if any, the current one waits for."""

    def __init__(self) -> None:
        self.count = 0
        """Pauses so far in this run; an input's handler answers once it has grown."""
        self.input_waits = 0
        """Of those, the waits for an input."""
        self.handing_over = False
        """The run is about to continue as new: handlers answer now (the next run goes on with their input)."""
        self._waiting_for: Callable[[], bool] | None = None

    def pause(self) -> None:
        """The conversation is about to wait for an activity or a timer (no input ends that wait)."""
        self.count += 1

    def waiting_for_input(self, ready: Callable[[], bool]) -> None:
        """The conversation is about to wait until `ready` holds, which an input makes true."""
        self.count += 1
        self.input_waits += 1
        self._waiting_for = ready

    def resumed(self) -> None:
        self._waiting_for = None

    def woken(self) -> bool:
        """Whether the input just accepted ends the current wait (the conversation then runs to its next pause)."""
        return self._waiting_for is not None and self._waiting_for()

    def answerable(self, published: Callable[[], bool], *, through_activities: bool) -> Callable[[], bool]:
        """The condition an input's handler waits for, from now: the next pause (or, `through_activities`, an event
        `published` or the next wait for an input), or the run handing over."""
        if through_activities:
            input_waits = self.input_waits
            return lambda: published() or self.input_waits > input_waits or self.handing_over
        count = self.count
        return lambda: self.count > count or self.handing_over
