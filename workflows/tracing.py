"""Spans from workflow code: each input processed in the trace of the request that sent it, waits as long as they last.

A conversation workflow lives for days, so its one `RunWorkflow` span cannot hold the user's requests. Instead the
signal or update handler that accepts an input remembers the caller's trace context (the tracing interceptor,
client/plugin.py, attaches it from the message's headers), and the run loop processes that input under a span of
that trace: `invoke_agent {agent}` for a user message, `switch_agent {agent}` for a switch. Everything the input
causes hangs under it: each LLM call (`chat {model}`, workflows/genai.py) with its attempts, and the activities it
starts; projection writes use the context of the input being processed (`current`).

An approval's wait is recorded when it is settled as an `approval.wait` span that starts at the request and ends at
the decision, expiry or cancellation, in the trace of the turn that asked, with the decision as an attribute and a
link to the request that decided it. Recording it then, with the approval's own timestamps, keeps its duration true
whatever happened in between (worker restarts, cache evictions).

Replay safety comes from the process's tracer provider (temporalio.contrib.opentelemetry.create_tracer_provider, set
up by client/telemetry.py): span ids come from the workflow's deterministic randomness, a span started during replay
keeps its original start time, and no span is ended (exported) while history is replayed, so a span finished before a
restart is not exported twice and one still open is exported once, when it ends. Without that provider (telemetry
off, or a process that installed its own) workflow code records no spans at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from temporalio import workflow
from temporalio.contrib.opentelemetry import ReplaySafeTracerProvider

from workflows import genai
from workflows.metrics import decision_of
from workflows.model import AgentType, LlmReply, LlmRequest, PendingApproval, SwitchAgent, UserMessage

TRACER_NAME = "agent_runtime.workflow"
APPROVAL_WAIT_SPAN = "approval.wait"
# Contexts kept for inputs and decisions not consumed yet (an input queued behind a turn, a decision on a call that
# never waited): bounded, oldest dropped first; losing one only starts a turn in a trace of its own.
REMEMBERED_CONTEXTS = 256

K = TypeVar("K")
V = TypeVar("V")


def workflow_tracer() -> trace.Tracer:
    """The replay-safe tracer when the process has one, else a tracer that records nothing."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, ReplaySafeTracerProvider):
        return provider.get_tracer(TRACER_NAME)
    return trace.NoOpTracer()


class SessionTraces:
    """The trace contexts of one session's inputs, turns and approvals.

    Args:
        session_id: The session (`gen_ai.conversation.id` on every span).
        tracer: Record with this tracer instead of `workflow_tracer()` (tests).
    """

    def __init__(self, session_id: str, tracer: trace.Tracer | None = None) -> None:
        self._session_id = session_id
        self._tracer = tracer or workflow_tracer()
        self._inputs: dict[int, Context] = {}
        self._deciders: dict[str, SpanContext] = {}
        self._askers: dict[str, Context] = {}
        self.current: Context | None = None
        """The context of the input being processed (or last processed): projection writes go in its trace."""

    # --- handlers: remember who sent what ---

    def input_accepted(self, item: UserMessage | SwitchAgent) -> None:
        """Called by the handler that queued `item`: its turn will run in the caller's trace.

        Keyed by the object, which stays in the inbox until the turn takes it (an input carried over
        continue-as-new is a new object and starts a trace of its own).
        """
        context = otel_context.get_current()
        _keep(self._inputs, id(item), context)
        if self.current is None:
            self.current = context

    def decision_arrived(self, key: str) -> None:
        """Called by the handler of a decision (a call id, a plan's request id, or `cancel_turn`): the approval it
        settles links to this request."""
        caller = trace.get_current_span().get_span_context()
        if caller.is_valid:
            _keep(self._deciders, key, caller)

    # --- the run loop ---

    @contextlib.contextmanager
    def turn(self, item: UserMessage | SwitchAgent, agent: Callable[[], AgentType]) -> Iterator[None]:
        """Process `item` under a span in its sender's trace; `agent` names the agent that handled it, at the end."""
        parent = self._inputs.pop(id(item), None)
        operation = "invoke_agent" if isinstance(item, UserMessage) else "switch_agent"
        span = self._tracer.start_span(
            f"{operation} {agent().value}",
            context=parent,
            attributes={
                genai.OPERATION_NAME: operation,
                genai.CONVERSATION_ID: self._session_id,
                "agent_runtime.session_id": self._session_id,
            },
        )
        with self._within(span, parent) as context, _ending(span):
            self.current = context
            try:
                yield
            except asyncio.CancelledError:
                # cancel_turn (or an eviction, whose span is not exported: it replays later).
                span.set_attribute("agent_runtime.turn.cancelled", True)
                raise
            except Exception as err:
                _failed(span, type(err).__name__, str(err))
                raise
            finally:
                handler = agent().value
                span.update_name(f"{operation} {handler}")
                span.set_attribute("gen_ai.agent.name", handler)

    @contextlib.contextmanager
    def llm_call(self, request: LlmRequest) -> Iterator[LlmCallSpan]:
        """One logical LLM call (all its attempts) as the conventions' `chat {model}` CLIENT span."""
        span = self._tracer.start_span(
            genai.span_name(request), kind=SpanKind.CLIENT, attributes=genai.request_attributes(request)
        )
        with self._within(span, None), _ending(span):
            try:
                yield LlmCallSpan(span)
            except asyncio.CancelledError:
                span.set_attribute("agent_runtime.cancelled", True)
                raise

    @contextlib.contextmanager
    def in_current_turn(self) -> Iterator[None]:
        """Attach the context of the input being processed (for work started outside its task: projection writes)."""
        if self.current is None:
            yield
            return
        with _attached(self.current):
            yield

    # --- approvals ---

    def approval_requested(self, approval: PendingApproval) -> None:
        _keep(self._askers, approval.call_id, otel_context.get_current())

    def approval_settled(self, approval: PendingApproval) -> None:
        """Record the whole wait as one span, from the request to the decision (see the module docstring)."""
        parent = self._askers.pop(approval.call_id, None)
        decider = (
            self._deciders.pop(approval.call_id, None)
            or self._deciders.pop(approval.request_id, None)
            or self._deciders.get(approval.decided_by or "")
        )
        attributes: dict[str, str] = {
            genai.CONVERSATION_ID: self._session_id,
            "gen_ai.tool.name": approval.tool_name,
            "gen_ai.tool.call.id": approval.call_id,
            "agent_runtime.approval.type": approval.request_type,
            "agent_runtime.approval.decision": decision_of(approval),
            "agent_runtime.approval.decided_by": approval.decided_by or "",
        }
        span = self._tracer.start_span(
            APPROVAL_WAIT_SPAN,
            context=parent,
            attributes=attributes,
            links=[Link(decider, {"agent_runtime.link": "decision"})] if decider is not None else None,
            start_time=_nanoseconds(approval.created_at),
        )
        span.end(end_time=_nanoseconds(approval.decided_at or workflow.now()))

    def _within(self, span: Span, parent: Context | None) -> contextlib.AbstractContextManager[Context]:
        return _attached(trace.set_span_in_context(span, parent))


class LlmCallSpan:
    """What the workflow learns about a logical LLM call once it ends."""

    def __init__(self, span: Span) -> None:
        self._span = span

    def succeeded(self, reply: LlmReply) -> None:
        self._span.set_attributes(genai.reply_attributes(reply))

    def failed(self, error_type: str, message: str) -> None:
        _failed(self._span, error_type, message)


def _failed(span: Span, error_type: str, message: str) -> None:
    # Not span.record_exception: the replay-safe span would then take the error for a workflow task failure and
    # never export the span.
    span.set_attribute(genai.ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR, message[:500]))


@contextlib.contextmanager
def _ending(span: Span) -> Iterator[None]:
    """End `span` when the block ends, unless the workflow was dropped from the worker's cache without an eviction
    (a shutting-down worker): its coroutine is then closed later, outside the workflow, where the replay-safe span
    cannot tell, and the span would be exported at a wrong time and again by the worker that replays the workflow."""
    try:
        yield
    except GeneratorExit:
        raise
    except BaseException:
        span.end()
        raise
    span.end()


@contextlib.contextmanager
def _attached(context: Context) -> Iterator[Context]:
    token = otel_context.attach(context)
    try:
        yield context
    finally:
        # A coroutine abandoned by an evicted workflow may be finalised in another context, where the token is not
        # valid; there is nothing to detach there (temporalio.contrib.opentelemetry does the same).
        with contextlib.suppress(ValueError):
            token.var.reset(token)


def _keep(store: dict[K, V], key: K, value: V) -> None:
    store.pop(key, None)
    store[key] = value
    while len(store) > REMEMBERED_CONTEXTS:
        del store[next(iter(store))]


def _nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)
