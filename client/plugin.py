"""The runtime's Temporal plugin: what every client, worker and replayer of the conversation workflows shares.

- The data converter: pydantic (every contract type is a pydantic model), with Temporal's external payload storage
  over the content store, so a payload over the threshold is stored and referenced from history whoever sends it.
- Tracing, when telemetry is on (client/telemetry.py): the SDK's `OpenTelemetryInterceptor` (what its
  `OpenTelemetryPlugin` installs), so a gateway's request, the update or signal, the workflow's spans
  (workflows/tracing.py), the LLM calls and the projection writes share one trace. Unlike the older
  `TracingInterceptor` (whose workflow spans last 0 ms), it lets workflow code keep spans open across waits (an LLM
  call with its retries, a turn), through the replay-safe tracer provider telemetry installs. Temporal's own spans
  are on for clients (`StartWorkflowUpdate:...`, `SignalWorkflow:...`) and activities (`RunActivity:...`, one per
  attempt), off in workflows, where the workflow's own spans stand for them: a conversation's `RunWorkflow` span
  would last for days, and the SDK's workflow spans log "Failed to detach context" errors whenever a worker drops a
  running workflow from its cache (which every worker shutdown does to every open conversation).
- Packages passed through the workflow sandbox, always (`SANDBOX_PASSTHROUGH`; replays must load the same way):
  - `opentelemetry`: workflow code opens spans in the context the interceptor attaches, so both must use the one
    module, not a sandbox copy;
  - `workflows`, the runtime's own workflow code: it is deterministic by construction (no I/O, clock or randomness;
    no state at module level), and `workflows/conversation.py` already passes through every module it imports. The
    sandbox would otherwise execute `conversation.py` again for every workflow instance (each new session, each
    continue-as-new run, each session replayed after an eviction): 3-6 ms of worker CPU and ~0.1 MiB per cached
    session, measured, for the sandbox's check of that one module. The replay tests (tests/workflow/test_replay.py)
    still run it under the default sandbox, so a non-deterministic call added there fails in CI.
- The workflow failure policy, on workers and the replayer: no exception type fails a conversation workflow. A failed
  workflow is a session lost for good; a bug inside a turn ends that turn (workflows/conversation.py), and anything
  else fails the workflow task, which Temporal retries, so deploying a fix resumes the session where it stopped.

A worker built from a client with this plugin gets it too (the SDK applies a client's worker plugins to its workers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from temporalio.contrib.opentelemetry import OpenTelemetryInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, ExternalStorage
from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkflowInterceptorClassInput, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.content import ContentStore

PLUGIN_NAME = "agent-runtime"
# Temporal payloads of this many bytes or more go to the content store (settings: CONTENT__EXTERNAL_STORAGE_THRESHOLD).
DEFAULT_EXTERNAL_STORAGE_THRESHOLD = 256 * 1024


def data_converter(content: ContentStore | None, threshold: int | None = None) -> DataConverter:
    """The runtime's data converter: pydantic, plus external storage of large payloads when a store is given."""
    if content is None:
        return pydantic_data_converter
    storage = ExternalStorage(
        drivers=[content.driver], payload_size_threshold=threshold or DEFAULT_EXTERNAL_STORAGE_THRESHOLD
    )
    return dataclasses.replace(pydantic_data_converter, external_storage=storage)


class TemporalSpans(OpenTelemetryInterceptor):
    """The SDK's tracing interceptor with Temporal's spans on clients and activities only (see the module
    docstring); workflows still get the caller's context and pass theirs on to the activities they start."""

    def __init__(self) -> None:
        super().__init__(add_temporal_spans=True)
        self._in_workflows = OpenTelemetryInterceptor(add_temporal_spans=False)

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> Any:
        return self._in_workflows.workflow_interceptor_class(input)


SANDBOX_PASSTHROUGH = ("opentelemetry", "workflows")


def with_passthrough(runner: WorkflowRunner | None) -> WorkflowRunner:
    """The worker's workflow runner with `SANDBOX_PASSTHROUGH` passed through the sandbox (see the module docstring)."""
    runner = runner or SandboxedWorkflowRunner()
    if isinstance(runner, SandboxedWorkflowRunner):
        restrictions = runner.restrictions.with_passthrough_modules(*SANDBOX_PASSTHROUGH)
        return dataclasses.replace(runner, restrictions=restrictions)
    return runner


class AgentRuntimePlugin(SimplePlugin):
    """The data converter, tracing, the sandbox passthrough and the failure policy (see the module docstring).

    Args:
        content: The content store every process of the deployment shares; None: no external payload storage.
        threshold: Payload size (bytes) from which payloads are stored externally.
        interceptors: More client and worker interceptors.
        tracing: Trace Temporal calls and workflow code; needs the tracer provider `client.telemetry.telemetry`
            installs (the SDK refuses to start a worker without it).
    """

    def __init__(
        self,
        content: ContentStore | None,
        *,
        threshold: int | None = None,
        interceptors: Sequence[Any] = (),
        tracing: bool = False,
    ) -> None:
        self.threshold = threshold
        self.tracing = tracing
        self.extra_interceptors = tuple(interceptors)
        tracer = [TemporalSpans()] if tracing else []
        super().__init__(
            PLUGIN_NAME,
            data_converter=data_converter(content, threshold),
            interceptors=[*interceptors, *tracer],
            workflow_runner=with_passthrough,
            workflow_failure_exception_types=[],
        )

    def over(self, content: ContentStore, threshold: int | None = None) -> AgentRuntimePlugin:
        """The same plugin over another content store (tracing and interceptors kept)."""
        return AgentRuntimePlugin(
            content,
            threshold=threshold if threshold is not None else self.threshold,
            interceptors=self.extra_interceptors,
            tracing=self.tracing,
        )
