"""The session's metrics (spec §7), recorded from the workflow through Temporal's replay-safe metric meter.

Temporal records nothing while a workflow replays, so a restarted worker does not count a decision twice. The
telemetry setup (client/telemetry.py) exports these with Temporal's own metrics to OpenTelemetry.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.contrib.opentelemetry import TracingWorkflowInboundInterceptor
from temporalio.contrib.opentelemetry.workflow import completed_span

from workflows.model import (
    AgentType,
    PendingApproval,
)


class SessionMetrics:
    def __init__(self) -> None:
        meter = workflow.metric_meter()
        self._tool_calls = meter.create_counter("agent_runtime_tool_calls", "Tool calls by outcome")
        self._approvals = meter.create_counter("agent_runtime_approvals", "Approvals by decision")
        self._approval_wait = meter.create_histogram_timedelta(
            "agent_runtime_approval_wait", "Time from approval request to decision or expiry", "duration"
        )
        self._expirations = meter.create_counter("agent_runtime_approval_expirations", "Approvals that expired")
        self._switches = meter.create_counter("agent_runtime_agent_switches", "Agent switches")
        self._fallbacks = meter.create_counter(
            "agent_runtime_classification_fallbacks", "Routing decided by keywords because classification failed"
        )
        self._llm_requests = meter.create_counter("agent_runtime_llm_requests", "LLM requests (after retries)")

    def tool_call(self, tool: str, outcome: str) -> None:
        self._tool_calls.add(1, {"tool": tool, "outcome": outcome})

    def approval_settled(self, approval: PendingApproval) -> None:
        """Count the decision, time the wait, and record the wait as a span of the session's trace."""
        outcome = approval.decision.value if approval.decision else approval.status.value
        labels = {"tool": approval.tool_name, "decision": outcome, "type": approval.request_type}
        self._approvals.add(1, labels)
        waited = (approval.decided_at or approval.created_at) - approval.created_at
        self._approval_wait.record(waited, labels)
        if outcome == "expired":
            self._expirations.add(1, {"tool": approval.tool_name})
        # Spans need the tracing interceptor on the worker; without it (telemetry off) there is nothing to record.
        if TracingWorkflowInboundInterceptor._from_context() is not None:
            completed_span(
                "approval.wait",
                attributes={
                    "agent_runtime.session_id": approval.session_id,
                    "agent_runtime.call_id": approval.call_id,
                    "agent_runtime.tool": approval.tool_name,
                    "agent_runtime.approval.type": approval.request_type,
                    "agent_runtime.approval.outcome": outcome,
                    "agent_runtime.approval.decided_by": approval.decided_by or "",
                    "agent_runtime.approval.wait_seconds": waited.total_seconds(),
                },
            )

    def switch(self, from_agent: AgentType, to_agent: AgentType, source: str) -> None:
        self._switches.add(1, {"from": from_agent.value, "to": to_agent.value, "source": source})

    def classification_fallback(self) -> None:
        self._fallbacks.add(1)

    def llm_request(self, purpose: str, ok: bool) -> None:
        self._llm_requests.add(1, {"purpose": purpose, "ok": str(ok).lower()})
