"""The session's metrics, recorded from the workflow through Temporal's replay-safe metric meter.

Temporal records nothing while a workflow replays, so a restarted worker does not count a decision twice. The
telemetry setup (client/telemetry.py) drains them, with Temporal's own metrics, into OpenTelemetry. Every metric
meter of a workflow adds `namespace`, `task_queue` and `workflow_type` to the attributes below.

- `gen_ai.client.operation.duration` (s) and `gen_ai.client.token.usage` ({token}): the GenAI conventions'
  histograms (workflows/genai.py), one point per logical LLM call, retries included (the workflow times the call).
- `agent_runtime_llm_requests`: LLM calls by `purpose` (agent, classification) and `ok`.
- `agent_runtime_tool_calls`: closed tool calls by `tool` and `outcome`.
- `agent_runtime_approvals` and `agent_runtime_approval_wait` (s, from the request to the decision, expiry or
  cancellation): settled approvals by `tool`, `decision` and `type` (tool or plan).
- `agent_runtime_automatic_approvals`: tool calls approved without asking anyone, by `tool` and `by` (`policy`: an
  allow rule with conditions; `remembered`: a remembered decision); never counted with the human decisions above.
- `agent_runtime_approval_expirations` by `tool`; `agent_runtime_approval_notices` (reminders and escalations of
  approvals still waiting) by `tool` and `kind`; `agent_runtime_agent_switches` by `from`, `to` and `source`;
  `agent_runtime_classification_fallbacks`.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows import genai
from workflows.model import AgentType, LlmReply, LlmRequest, PendingApproval

OPERATION_DURATION = "gen_ai.client.operation.duration"
TOKEN_USAGE = "gen_ai.client.token.usage"
APPROVAL_WAIT = "agent_runtime_approval_wait"

# Bucket boundaries per histogram, applied by the exporter's views (client/telemetry.py). The GenAI ones are the
# conventions' own; an approval waits for a human, from seconds to a day.
HISTOGRAM_BUCKETS: dict[str, tuple[float, ...]] = {
    OPERATION_DURATION: (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
    TOKEN_USAGE: tuple(float(4**power) for power in range(14)),
    APPROVAL_WAIT: (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400),
}


class SessionMetrics:
    def __init__(self) -> None:
        meter = workflow.metric_meter()
        self._operation_duration = meter.create_histogram_float(OPERATION_DURATION, "GenAI operation duration.", "s")
        self._token_usage = meter.create_histogram(TOKEN_USAGE, "Number of input and output tokens used.", "{token}")
        self._llm_requests = meter.create_counter("agent_runtime_llm_requests", "LLM calls (retries included in one)")
        self._tool_calls = meter.create_counter("agent_runtime_tool_calls", "Tool calls by outcome")
        self._approvals = meter.create_counter("agent_runtime_approvals", "Settled approvals by decision")
        self._approval_wait = meter.create_histogram_float(
            APPROVAL_WAIT, "Time from an approval request to its decision, expiry or cancellation", "s"
        )
        self._expirations = meter.create_counter("agent_runtime_approval_expirations", "Approvals that expired")
        self._notices = meter.create_counter(
            "agent_runtime_approval_notices", "Reminders and escalations of approvals that still waited"
        )
        self._automatic = meter.create_counter(
            "agent_runtime_automatic_approvals", "Tool calls approved without a prompt, by policy rule or remembered"
        )
        self._switches = meter.create_counter("agent_runtime_agent_switches", "Agent switches")
        self._fallbacks = meter.create_counter(
            "agent_runtime_classification_fallbacks", "Routing decided by keywords because classification failed"
        )

    def llm_call(self, request: LlmRequest, took: timedelta, reply: LlmReply | None, error: str | None) -> None:
        """One logical LLM call: its duration, its tokens (when it succeeded), and the request counter."""
        attributes = genai.metric_attributes(request, reply, error)
        self._operation_duration.record(took.total_seconds(), attributes)
        if reply is not None:
            self._token_usage.record(reply.usage.prompt_tokens, attributes | {genai.TOKEN_TYPE: genai.INPUT})
            self._token_usage.record(reply.usage.completion_tokens, attributes | {genai.TOKEN_TYPE: genai.OUTPUT})
        self._llm_requests.add(1, {"purpose": request.purpose, "ok": str(reply is not None).lower()})

    def tool_call(self, tool: str, outcome: str) -> None:
        self._tool_calls.add(1, {"tool": tool, "outcome": outcome})

    def approval_settled(self, approval: PendingApproval) -> None:
        """Count the decision and record how long it was waited for."""
        labels = {"tool": approval.tool_name, "decision": decision_of(approval), "type": approval.request_type}
        self._approvals.add(1, labels)
        self._approval_wait.record(waited(approval).total_seconds(), labels)
        if labels["decision"] == "expired":
            self._expirations.add(1, {"tool": approval.tool_name})

    def approval_notice(self, approval: PendingApproval, kind: str) -> None:
        """A reminder or an escalation went out for an approval that still waited."""
        self._notices.add(1, {"tool": approval.tool_name, "kind": kind})

    def automatic_approval(self, approval: PendingApproval) -> None:
        """Count an approval nobody was asked for, apart from the human decisions in `agent_runtime_approvals`."""
        self._automatic.add(1, {"tool": approval.tool_name, "by": approval.decided_by or ""})

    def switch(self, from_agent: AgentType, to_agent: AgentType, source: str) -> None:
        self._switches.add(1, {"from": from_agent.value, "to": to_agent.value, "source": source})

    def classification_fallback(self) -> None:
        self._fallbacks.add(1)


def decision_of(approval: PendingApproval) -> str:
    """How a settled approval ended: the human's decision, else its status (expired, cancelled)."""
    return approval.decision.value if approval.decision else approval.status.value


def waited(approval: PendingApproval) -> timedelta:
    return (approval.decided_at or approval.created_at) - approval.created_at
