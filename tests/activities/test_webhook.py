"""The approval webhook activity against a real HTTP receiver: the body, the headers and the signature; which
answers Temporal retries; and a URL that never shows in an error or a log."""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.webhook import EVENT_HEADER, NOTICE_HEADER, SIGNATURE_HEADER, WebhookActivities
from devstack.temporal import free_port
from devstack.webhook_sink import WebhookSink
from workflows.model import WEBHOOK_REJECTED_ERROR, WEBHOOK_UNAVAILABLE_ERROR, AgentType, PendingApproval
from workflows.observability import approval_notice

AT = datetime(2026, 2, 3, 5, 0, tzinfo=UTC)
NOTICE = approval_notice(
    "reminder",
    PendingApproval(
        request_id="call_1",
        session_id="s1",
        call_id="call_1",
        tool_name="execute_command",
        subject="execute_command",
        arguments={"command": "rm -rf build"},
        reason="Running a command requires user approval",
        agent=AgentType.CODER,
        created_at=AT,
    ),
    AT + timedelta(minutes=15),
)


async def test_a_notice_is_posted_signed_and_named() -> None:
    async with WebhookSink() as sink, httpx.AsyncClient() as http:
        hook = WebhookActivities(http, url=sink.url, secret="k3y")
        delivery = await ActivityEnvironment().run(hook.notify_approval, NOTICE)
    assert (delivery.delivered, delivery.status_code) == (True, 200)
    [received] = sink.received
    assert received.body == NOTICE.model_dump(mode="json")
    assert received.headers["content-type"] == "application/json"
    assert received.headers[EVENT_HEADER.lower()] == "approval.reminder"
    assert received.headers[NOTICE_HEADER.lower()] == "session-s1/call_1/reminder"
    expected = "sha256=" + hmac.new(b"k3y", received.raw, hashlib.sha256).hexdigest()
    assert received.headers[SIGNATURE_HEADER.lower()] == expected


@pytest.mark.parametrize(
    ("status", "error_type", "retried"),
    [
        (503, WEBHOOK_UNAVAILABLE_ERROR, True),
        (500, WEBHOOK_UNAVAILABLE_ERROR, True),
        (429, WEBHOOK_UNAVAILABLE_ERROR, True),
        (408, WEBHOOK_UNAVAILABLE_ERROR, True),
        (400, WEBHOOK_REJECTED_ERROR, False),
        (404, WEBHOOK_REJECTED_ERROR, False),
    ],
)
async def test_what_temporal_retries(status: int, error_type: str, retried: bool) -> None:
    async with WebhookSink() as sink, httpx.AsyncClient() as http:
        sink.fail_next(status)
        hook = WebhookActivities(http, url=f"{sink.url}?token=s3cr3t")
        with pytest.raises(ApplicationError) as raised:
            await ActivityEnvironment().run(hook.notify_approval, NOTICE)
    assert (raised.value.type, raised.value.non_retryable) == (error_type, not retried)
    assert "s3cr3t" not in str(raised.value) and "/hooks/" not in str(raised.value)
    assert f"answered {status} on attempt 1" in str(raised.value)
    assert "SIGNATURE" not in str(sink.received[0].headers).upper()  # no secret, no signature


async def test_an_unreachable_webhook_is_retried_and_its_url_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/services/T0/B0/pathtoken?token=querytoken"
    async with httpx.AsyncClient() as http:
        hook = WebhookActivities(http, url=url)
        with caplog.at_level(logging.WARNING), pytest.raises(ApplicationError) as raised:
            await ActivityEnvironment().run(hook.notify_approval, NOTICE)
    assert (raised.value.type, raised.value.non_retryable) == (WEBHOOK_UNAVAILABLE_ERROR, False)
    for text in (str(raised.value), caplog.text):
        assert "pathtoken" not in text and "querytoken" not in text
    assert "approval webhook at http://127.0.0.1:" in str(raised.value) and "ConnectError" in str(raised.value)


async def test_without_a_url_nothing_is_sent() -> None:
    async with httpx.AsyncClient() as http:
        delivery = await ActivityEnvironment().run(WebhookActivities(http, url=None).notify_approval, NOTICE)
    assert delivery.delivered is False and "no approval webhook" in delivery.detail
