"""The runtime's Temporal plugin: what every client, worker and replayer of the conversation workflows shares.

- The data converter: pydantic (every contract type is a pydantic model), with Temporal's external payload storage
  over the content store, so a payload over the threshold is stored and referenced from history whoever sends it.
- Interceptors (tracing, when telemetry is on).
- The workflow failure policy, on workers and the replayer: no exception type fails a conversation workflow. A failed
  workflow is a session lost for good; a bug inside a turn ends that turn (workflows/conversation.py), and anything
  else fails the workflow task, which Temporal retries, so deploying a fix resumes the session where it stopped.

A worker built from a client with this plugin gets it too (the SDK applies a client's worker plugins to its workers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, ExternalStorage
from temporalio.plugin import SimplePlugin

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


class AgentRuntimePlugin(SimplePlugin):
    """The data converter, the interceptors and the failure policy of the runtime (see the module docstring).

    Args:
        content: The content store every process of the deployment shares; None: no external payload storage.
        threshold: Payload size (bytes) from which payloads are stored externally.
        interceptors: Client and worker interceptors (the tracing interceptor when telemetry is on).
    """

    def __init__(
        self, content: ContentStore | None, *, threshold: int | None = None, interceptors: Sequence[Any] = ()
    ) -> None:
        super().__init__(
            PLUGIN_NAME,
            data_converter=data_converter(content, threshold),
            interceptors=list(interceptors),
            workflow_failure_exception_types=[],
        )
