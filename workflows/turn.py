"""An agent turn: route if needed, call the LLM, run the tool calls of each answer in order, until a final answer or
a stop (a follow-up question, the tool-call budget, a failure, a plan decision).

The assistant message is in the history before any of its tool calls leaves the runtime (I7); every call of an
answer gets exactly one tool message before the next LLM call (I1); a failed LLM call becomes an `error` event and
touches nothing (I3, B2).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows import tool_messages
from workflows.agents import AGENTS, Agent, check_tool_call
from workflows.content import Content
from workflows.history import unique_call_ids
from workflows.llm_calls import LlmCalls, error_text, learned_window
from workflows.model import AgentType, ChunkType, LlmReply, ToolCall
from workflows.routing import ClassificationError, Route, parse_classification, route_by_keywords, single_agent_route
from workflows.runtime_tools import RuntimeTools
from workflows.session import Session
from workflows.tools import CATALOGUE, Executor
from workflows.waits import ToolWaits

if TYPE_CHECKING:
    from workflows.plan_runner import PlanRunner

# Tool calls handled from one answer; the rest are closed with an error result at once (a model emitting dozens of
# calls in a loop must not tie a turn up for hours of approvals).
CALLS_PER_ANSWER_LIMIT = 32


class TurnEnd(StrEnum):
    """How an agent turn ended; a plan uses it to mark its subtask."""

    ANSWERED = "answered"
    QUESTION = "question"
    FAILED = "failed"
    BUDGET = "budget"
    PLAN_APPROVED = "plan_approved"
    PLAN_REJECTED = "plan_rejected"


@dataclass
class _ToolRound:
    """What the tool calls of one assistant message decided about the turn."""

    final_text: Content = None
    question: bool = False
    plan_proposed: bool = False
    plan_end: TurnEnd | None = None


class _Budget:
    """The per-turn tool-call budget that stops runaway tool loops (bug B15)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.exhausted = False

    def take(self) -> bool:
        if self.used >= self.limit:
            self.exhausted = True
            return False
        self.used += 1
        return True


class TurnRunner:
    """Runs agent turns over a session."""

    def __init__(
        self, session: Session, llm: LlmCalls, waits: ToolWaits, tools: RuntimeTools, plans: PlanRunner
    ) -> None:
        self._session = session
        self._llm = llm
        self._waits = waits
        self._tools = tools
        self._plans = plans

    async def run(self, *, last_word: bool = True) -> TurnEnd:
        """Route if needed, then call the LLM and run its tool calls until it answers or a stop applies.

        `last_word` is False inside a plan: the subtask's answer is then not a wait point, the plan goes on.
        """
        session = self._session
        budget = _Budget(session.config.tool_call_budget)
        while True:
            if session.agent is AgentType.ORCHESTRATOR:
                await self._route(session.history.last_user_text())
            agent = AGENTS[session.agent]
            reply = await self._complete(agent, last_word=last_word)
            if reply is None:
                return TurnEnd.FAILED
            calls = unique_call_ids(reply.tool_calls, session.history, salt=session.new_id()[:8])
            # The assistant message is in the history before any tool_call leaves the runtime (I7).
            session.answer_started_at = workflow.now()
            session.history.add_assistant(
                reply.content, calls, agent=agent.type, message_id=session.new_id(), at=workflow.now()
            )
            if not calls:
                session.emit(
                    ChunkType.ASSISTANT_MESSAGE, content=reply.content, token=reply.content, is_final=last_word
                )
                return TurnEnd.ANSWERED
            if reply.content:
                session.emit(ChunkType.ASSISTANT_MESSAGE, content=reply.content, token=reply.content)
            round_ = await self._run_tool_calls(agent, calls, budget)
            if round_.plan_end is not None:
                return round_.plan_end
            end = TurnEnd.QUESTION if round_.question else TurnEnd.ANSWERED
            final_text: Content = round_.final_text
            if budget.exhausted:
                session.counters.budget_stops += 1
                end, final_text = TurnEnd.BUDGET, tool_messages.budget_stop_message(budget.limit)
            if final_text is not None:
                final_text = tool_messages.unmistakable(final_text)
                session.history.add_assistant(
                    final_text, [], agent=agent.type, message_id=session.new_id(), at=workflow.now()
                )
                # A follow-up question always waits for the user, inside a plan too.
                final = last_word or end is TurnEnd.QUESTION
                session.emit(ChunkType.ASSISTANT_MESSAGE, content=final_text, token=final_text, is_final=final)
                return end

    async def _run_tool_calls(self, agent: Agent, calls: list[ToolCall], budget: _Budget) -> _ToolRound:
        """Close every call of one assistant message, in order, and say how the turn goes on."""
        session = self._session
        round_ = _ToolRound()
        for index, call in enumerate(calls):
            if index >= CALLS_PER_ANSWER_LIMIT:
                session.close_call(call, tool_messages.too_many_calls(len(calls), CALLS_PER_ANSWER_LIMIT), "refused")
                continue
            if not budget.take():
                session.close_call(call, tool_messages.over_budget(budget.limit), outcome="over_budget")
                continue
            refusal = check_tool_call(agent, call)
            if refusal is None and call.name == "create_plan" and round_.plan_proposed:
                refusal = "one plan per answer: wait for the decision on the first one"
            if refusal is not None:
                session.close_call(call, tool_messages.refused(refusal), outcome="refused", emit=True)
            elif call.name == "create_plan":
                round_.plan_proposed = True
                round_.plan_end = await self._plans.propose(agent, call)
            elif CATALOGUE[call.name].executor is Executor.RUNTIME:
                text = self._tools.run(call)
                if text is not None:
                    round_.final_text = text
                    round_.question = call.name == "ask_followup_question"
            else:
                await self._waits.run_ide_tool(agent, call)
        return round_

    async def _route(self, text: str) -> None:
        """The orchestrator's classification; runs once per user message, never after a decision (bug B7)."""
        route = single_agent_route(self._session.agents) or await self._classify(text)
        self._session.switch_to(
            route.agent,
            route.reason or f"Routed by {route.method}",
            source="single_agent" if route.method == "single_agent" else "classification",
            confidence=route.confidence,
            method=route.method,
        )

    async def _classify(self, text: str) -> Route:
        session = self._session
        try:
            return parse_classification(await self._llm.classify(text, session.agents), session.agents)
        except (ActivityError, ClassificationError) as err:
            session.counters.classification_fallbacks += 1
            session.metrics.classification_fallback()
            workflow.logger.warning("Classification failed, using keywords: %s", error_text(err))
            return route_by_keywords(text, session.agents)

    async def _complete(self, agent: Agent, *, last_word: bool = True) -> LlmReply | None:
        """One agent step; a failure becomes an `error` event and leaves the history untouched (I3, B2).

        A provider that refused the context as too long teaches the session a smaller window, so the next turns
        start from it instead of failing the same way.
        """
        session = self._session
        try:
            reply = await self._llm.complete(
                agent,
                session.history.for_llm(),
                session.transcript,
                session.context_tokens,
                live_tokens=session.live_tokens,
            )
        except ActivityError as err:
            session.context_tokens = learned_window(err) or session.context_tokens
            session.emit(ChunkType.ERROR, content=error_text(err), error=error_text(err), is_final=last_word)
            return None
        if reply.context_tokens is not None:
            session.context_tokens = min(session.context_tokens, reply.context_tokens)
        return reply
