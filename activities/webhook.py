"""The approval webhook: reminders and escalations of approvals that still wait, POSTed to the operators' system.

One POST per attempt; Temporal retries (workflows/reminders.py gives the policy), so a receiver that is down for a
moment still gets the notice. The body is the `ApprovalNotice` as JSON, with these headers:

- `X-Agent-Runtime-Event`: `approval.reminder` or `approval.escalation`;
- `X-Agent-Runtime-Notice`: the notice's id, the same on every retry (a receiver drops repeats with it);
- `X-Agent-Runtime-Signature`: `sha256=<hex HMAC-SHA256 of the body>` with `AGENT_RUNTIME__APPROVAL__WEBHOOK_SECRET`,
  when one is set (verify it before trusting the notice).

The URL comes from the worker's settings, never from the workflow, so it is in no history; and it is never logged
(a chat service's webhook URL is its credential): logs and errors name the host only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlsplit

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows.model import (
    APPROVAL_WEBHOOK_ACTIVITY,
    WEBHOOK_REJECTED_ERROR,
    WEBHOOK_UNAVAILABLE_ERROR,
    ApprovalNotice,
    NoticeDelivery,
)

EVENT_HEADER = "X-Agent-Runtime-Event"
NOTICE_HEADER = "X-Agent-Runtime-Notice"
SIGNATURE_HEADER = "X-Agent-Runtime-Signature"
# Statuses where another attempt can succeed; any other 4xx means the receiver refuses this notice for good.
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


def signature(secret: str, body: bytes) -> str:
    """The signature header's value for a body: `sha256=` and the hex HMAC-SHA256 under the shared secret."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookActivities:
    """Delivers approval notices to the configured webhook.

    Args:
        http: The worker's HTTP client.
        url: The webhook's URL; None: notices are not sent (the activity says so, and the workflow logs it).
        secret: Signs every notice (`X-Agent-Runtime-Signature`).
        timeout_seconds: One attempt's timeout.
    """

    def __init__(
        self, http: httpx.AsyncClient, *, url: str | None, secret: str | None = None, timeout_seconds: float = 5.0
    ) -> None:
        self._http = http
        self._url = url
        self._secret = secret
        self._timeout = timeout_seconds
        self._host = _host_of(url) if url else None

    @activity.defn(name=APPROVAL_WEBHOOK_ACTIVITY)
    async def notify_approval(self, notice: ApprovalNotice) -> NoticeDelivery:
        """POST the notice to the webhook.

        Raises:
            ApplicationError: `WebhookUnavailable` (retryable) for a timeout, a connection failure, 5xx, 408, 409,
                425 or 429; `WebhookRejected` (non-retryable) for any other answer that is not 2xx.
        """
        if self._url is None:
            return NoticeDelivery(delivered=False, detail="no approval webhook is configured on this worker")
        body = json.dumps(notice.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "agent-runtime",
            EVENT_HEADER: f"approval.{notice.kind}",
            NOTICE_HEADER: notice.notice_id,
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, body)
        attempt = activity.info().attempt
        try:
            response = await self._http.post(self._url, content=body, headers=headers, timeout=self._timeout)
        except httpx.HTTPError as err:
            # The exception's text may contain the URL; only its class goes out.
            message = f"approval webhook at {self._host} unreachable ({type(err).__name__}) on attempt {attempt}"
            activity.logger.warning("%s", message)
            raise ApplicationError(message, type=WEBHOOK_UNAVAILABLE_ERROR) from None
        status = response.status_code
        if 200 <= status < 300:
            return NoticeDelivery(delivered=True, status_code=status)
        retryable = status >= 500 or status in _RETRYABLE_STATUSES
        message = f"approval webhook at {self._host} answered {status} on attempt {attempt}"
        activity.logger.warning("%s%s", message, "" if retryable else "; not retried")
        raise ApplicationError(
            message,
            {"status_code": status},
            type=WEBHOOK_UNAVAILABLE_ERROR if retryable else WEBHOOK_REJECTED_ERROR,
            non_retryable=not retryable,
        )


def _host_of(url: str) -> str:
    """`scheme://host[:port]`: what may be said about the URL (its path and query may be its secret)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"
