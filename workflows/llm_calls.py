"""How the workflow calls the LLM: the activity options that make Temporal own retries, and the bookkeeping.

Each call is one `llm.chat_completion` activity: timeouts, 429 and 5xx are retried with backoff, a 400 is final
(`LlmRequestRejected`). The activity heartbeats, so a worker that dies mid-call is noticed within the heartbeat
timeout. Every call, successful or not, is counted and recorded for the projection, and is one `chat {model}` span
and one point of the GenAI metrics, covering all its attempts (workflows/genai.py).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

from workflows import genai
from workflows.agents import Agent
from workflows.content import preview_of
from workflows.metrics import SessionMetrics
from workflows.model import (
    CHAT_COMPLETION_ACTIVITY,
    LLM_CONTEXT_TOO_LONG_ERROR,
    LLM_REQUEST_REJECTED_ERROR,
    AgentType,
    ChatMessage,
    ConversationConfig,
    LlmReply,
    LlmRequest,
    SessionCounters,
    TranscriptArchive,
)
from workflows.pauses import Pauses
from workflows.projection import Projection
from workflows.records import (
    LlmRequestRecord,
)
from workflows.routing import CLASSIFICATION_SYSTEM_PROMPT, CLASSIFICATION_TEMPERATURE, classification_prompt
from workflows.tracing import SessionTraces

RETRY_INITIAL = timedelta(seconds=1)
RETRY_MAX_INTERVAL = timedelta(seconds=30)
# A worker that dies mid-call is noticed after this (then the call is retried elsewhere): tests/test_durability.py
# measured ~22 s from SIGKILL to the retried request at 20 s; the activity beats every 2 s.
HEARTBEAT_TIMEOUT = timedelta(seconds=8)
# The activity's own HTTP deadline fires first; this margin only catches a stuck worker.
START_TO_CLOSE_MARGIN = timedelta(seconds=30)
# Classification has a keyword fallback, so one retry is enough before falling back.
CLASSIFICATION_MAX_ATTEMPTS = 2


class LlmCalls:
    def __init__(
        self,
        session_id: str,
        config: ConversationConfig,
        counters: SessionCounters,
        metrics: SessionMetrics,
        projection: Projection,
        traces: SessionTraces,
        pauses: Pauses,
    ) -> None:
        self._session_id = session_id
        self._config = config
        self._counters = counters
        self._metrics = metrics
        self._projection = projection
        self._traces = traces
        self._pauses = pauses

    async def complete(
        self,
        agent: Agent,
        history: list[ChatMessage],
        transcript: TranscriptArchive | None,
        context_tokens: int,
        *,
        live_tokens: bool = False,
    ) -> LlmReply:
        """One agent step over the paired history (this run's messages, plus the archived transcript the activity
        reads as far back as the window allows), with the agent's prompt and tools; streamed, its tokens published
        as they come, when the session streams and a client asked for `live_tokens`."""
        request = LlmRequest(
            session_id=self._session_id,
            agent=agent.type,
            model=self._config.llm_model,
            messages=[ChatMessage(role="system", content=agent.prompt), *history],
            transcript=transcript,
            context_tokens=context_tokens,
            tools=agent.tool_specs(),
            timeout_seconds=self._config.llm_timeout_seconds,
            stream=self._config.llm_streaming and live_tokens,
            request_id=str(workflow.uuid4()),
        )
        return await self._call(request, self._config.llm_max_attempts, f"{agent.type.value}: {request.model}")

    async def classify(self, text: str, candidates: frozenset[AgentType]) -> str:
        """The orchestrator's classification call; returns the model's raw answer for `parse_classification`."""
        self._counters.classification_calls += 1
        request = LlmRequest(
            session_id=self._session_id,
            purpose="classification",
            agent=AgentType.ORCHESTRATOR,
            model=self._config.llm_model,
            messages=[
                ChatMessage(role="system", content=CLASSIFICATION_SYSTEM_PROMPT),
                ChatMessage(role="user", content=classification_prompt(text, candidates)),
            ],
            temperature=CLASSIFICATION_TEMPERATURE,
            timeout_seconds=self._config.llm_timeout_seconds,
            request_id=str(workflow.uuid4()),
        )
        reply = await self._call(request, CLASSIFICATION_MAX_ATTEMPTS, "orchestrator: classify request")
        # A classification longer than the inline limit is not one; its start is enough to fail parsing visibly.
        return preview_of(reply.content)

    async def _call(self, request: LlmRequest, max_attempts: int, summary: str) -> LlmReply:
        self._counters.llm_requests += 1
        record = LlmRequestRecord(
            session_id=self._session_id,
            request_id=request.request_id,
            purpose=request.purpose,
            agent=request.agent,
            model=request.model,
            ok=False,
            created_at=workflow.now(),
        )
        self._pauses.pause()
        with self._traces.llm_call(request) as span:
            try:
                reply = await workflow.execute_activity(
                    CHAT_COMPLETION_ACTIVITY,
                    request,
                    result_type=LlmReply,
                    start_to_close_timeout=timedelta(seconds=request.timeout_seconds) + START_TO_CLOSE_MARGIN,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=RetryPolicy(
                        initial_interval=RETRY_INITIAL,
                        maximum_interval=RETRY_MAX_INTERVAL,
                        maximum_attempts=max_attempts,
                        non_retryable_error_types=[LLM_REQUEST_REJECTED_ERROR, LLM_CONTEXT_TOO_LONG_ERROR],
                    ),
                    summary=summary,
                )
            except ActivityError as err:
                if isinstance(err.cause, CancelledError):
                    # The turn was cancelled (cancel_turn) while the call ran: that is not an LLM failure to report.
                    raise asyncio.CancelledError() from err
                failure = genai.error_type(err)
                span.failed(failure, error_text(err))
                self._counters.llm_failures += 1
                self._metrics.llm_call(request, workflow.now() - record.created_at, None, failure)
                self._projection.llm_request(record, error=error_text(err))
                raise
            span.succeeded(reply)
        self._projection.llm_request(
            record,
            ok=True,
            usage=reply.usage,
            latency_ms=reply.latency_ms,
            finish_reason=reply.finish_reason,
            model=reply.model or request.model,
        )
        self._metrics.llm_call(request, workflow.now() - record.created_at, reply, None)
        self._counters.llm_latency_ms += reply.latency_ms
        tokens = self._counters.tokens
        tokens.prompt_tokens += reply.usage.prompt_tokens
        tokens.completion_tokens += reply.usage.completion_tokens
        tokens.total_tokens += reply.usage.total_tokens
        return reply


def learned_window(err: ActivityError) -> int | None:
    """The smaller context window a `context_length_exceeded` failure reports, so later calls start from it."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type == LLM_CONTEXT_TOO_LONG_ERROR and cause.details:
        details = cause.details[0]
        if isinstance(details, dict) and isinstance(details.get("context_tokens"), int):
            return int(details["context_tokens"])
    return None


def error_text(err: Exception) -> str:
    """What a failed LLM call says to the user: the activity's own error, not Temporal's wrapper."""
    cause = err.__cause__ if isinstance(err, ActivityError) and err.__cause__ else err
    return f"LLM request failed: {cause}"
