"""Is this host's worker polling? The container health check of a worker (`agent-runtime worker-health`).

A worker has no port to probe. What matters is that it polls its task queue, and the server knows who polls:
each poller's identity is the SDK's default `<pid>@<hostname>`, and a container's hostname is its own, so every
replica checks itself. A long poll lasts up to about a minute before it is renewed, hence the freshness window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

POLLER_FRESHNESS = timedelta(seconds=90)
_KINDS = {"workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY}


async def idle_poll_kinds(client: Client, task_queue: str, hostname: str, *, now: datetime | None = None) -> list[str]:
    """The kinds of tasks (workflow, activity) no worker on `hostname` has polled `task_queue` for lately.

    Returns:
        An empty list when this host's worker polls for both.
    """
    cutoff = (now or datetime.now(UTC)) - POLLER_FRESHNESS
    idle = []
    for kind, queue_type in _KINDS.items():
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=queue_type
            )
        )
        if not any(
            poller.identity.endswith(f"@{hostname}") and poller.last_access_time.ToDatetime(tzinfo=UTC) >= cutoff
            for poller in response.pollers
        ):
            idle.append(kind)
    return idle
