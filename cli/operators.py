"""The operator commands of `agent-runtime`: `approvals` (alone: the inbox; `approve`, `edit`, `reject`), `grants`,
`sessions`, `show`, `export`, `replay`, `worker-health`. The cross-session rules live in `client.inbox`, which the
HTTP API's `/approvals` uses too.

They read the same AGENT_RUNTIME__TEMPORAL__* settings as the worker (address, namespace, TLS, API key, task
queue). `replay` of files needs no Temporal at all, so it can gate a deploy in CI.

Exit codes, the same for every command here so that scripts can tell what happened:

    0  success (`approvals list`: whatever it found, unless --fail-if-any)
    1  replay: at least one history is NONDETERMINISTIC or FAILED; worker-health: this host's worker does not poll
    2  usage or settings error (bad flag, malformed --arguments, missing file, invalid visibility query,
       invalid AGENT_RUNTIME__* variable)
    3  approvals list --fail-if-any: matching approvals are pending (for monitoring)
    4  unknown session (no such workflow)
    5  unknown call id in that session (grants: unknown grant id)
    6  the approval was already resolved differently (e.g. reject after approve); a repeated identical
       decision is not an error (exit 0, reported as "no change")
    7  Temporal unreachable (connection refused, TLS or authentication failure)
    8  the session refused the decision (the call does not wait for approval, it is a plan approval, ...)
    9  the session did not answer in time (is a worker running?)

Errors go to stderr as one line, `agent-runtime <command>: <what went wrong>`; results go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.content import ContentStore
from cli import grants as grants_module
from cli import replay
from cli.health import POLLER_FRESHNESS, idle_poll_kinds
from cli.render import (
    duration,
    render_inbox,
    render_session,
    render_sessions,
    session_summary_json,
)
from cli.replay import UnknownWorkflowError, Verdict
from client import inbox as inbox_module
from client.connection import connect_client, open_content_store
from client.conversation_client import (
    ApprovalAlreadyResolvedError,
    ConversationClient,
    InvalidInputError,
    SessionClosedError,
    SessionStuckError,
    UnknownCallIdError,
    UnknownGrantError,
    UnknownSessionError,
)
from client.inbox import InboxFilter, decide_approval, find_pending_approvals, inbox_item, list_sessions
from client.telemetry import telemetry
from settings import Settings, SettingsError, load_settings
from workflows.model import (
    AgentType,
    Decision,
    HitlDecision,
    InputReceipt,
    workflow_id_for,
)

OPERATOR_COMMANDS = frozenset({"approvals", "grants", "sessions", "show", "export", "replay", "worker-health"})

EXIT_OK = 0
EXIT_REPLAY_FAILED = 1
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2
EXIT_APPROVALS_PENDING = 3
EXIT_UNKNOWN_SESSION = 4
EXIT_UNKNOWN_CALL = 5
EXIT_ALREADY_RESOLVED = 6
EXIT_UNREACHABLE = 7
EXIT_REFUSED = 8
EXIT_TIMEOUT = 9

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_REPLAY_FAILED, "replay: a history is NONDETERMINISTIC or FAILED; worker-health: no worker polls here"),
    (EXIT_USAGE, "usage or settings error"),
    (EXIT_APPROVALS_PENDING, "approvals list --fail-if-any: matching approvals are pending"),
    (EXIT_UNKNOWN_SESSION, "unknown session"),
    (EXIT_UNKNOWN_CALL, "unknown call id in that session (grants: unknown grant id)"),
    (EXIT_ALREADY_RESOLVED, "the approval was already resolved differently"),
    (EXIT_UNREACHABLE, "Temporal unreachable"),
    (EXIT_REFUSED, "the session refused the decision"),
    (EXIT_TIMEOUT, "the session did not answer in time (is a worker running?)"),
)

DEFAULT_DECISION_TIMEOUT = timedelta(seconds=30)
_DECISION_WORDS = {
    Decision.APPROVE: "approved",
    Decision.EDIT: "approved with edited arguments",
    Decision.REJECT: "rejected",
}


class UsageError(Exception):
    """The command line is well-formed but cannot be carried out as given (exit 2)."""


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `1d`, `1h30m` -> timedelta (argparse type; the rule is `client.inbox.parse_duration`)."""
    try:
        return inbox_module.parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('expected a JSON object of arguments, like \'{"command": "ls"}\'')
    return value


def add_operator_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the operator commands on the `agent-runtime` parser."""
    epilog = "exit codes:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES)
    fmt = argparse.RawDescriptionHelpFormatter

    def add(parent: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text, epilog=epilog, formatter_class=fmt
        )
        return parser

    approvals = add(
        commands,
        "approvals",
        "the cross-session inbox of tool calls waiting for a human (no ACTION: list it, as `approvals list`)",
    )
    _add_listing_options(approvals)
    actions = approvals.add_subparsers(dest="action", required=False, metavar="[ACTION]")
    _add_listing_options(add(actions, "list", "list pending approvals across sessions, oldest first"))
    for action, help_text in (
        ("approve", "approve a pending tool call or plan (CALL_ID: its call id or approval request id)"),
        ("edit", "approve a pending tool call with edited arguments"),
        ("reject", "reject a pending tool call or plan; the model sees the feedback"),
    ):
        decide = add(actions, action, help_text)
        decide.add_argument("session", metavar="SESSION", help="session id (without the 'session-' prefix)")
        decide.add_argument("call_id", metavar="CALL_ID")
        if action == "edit":
            decide.add_argument("--arguments", type=_json_object, required=True, metavar="JSON")
        if action == "reject":
            decide.add_argument("--feedback", metavar="TEXT")
        if action == "approve":
            grants_module.add_remember_options(decide)
        decide.add_argument(
            "--timeout",
            type=parse_duration,
            default=DEFAULT_DECISION_TIMEOUT,
            metavar="DURATION",
            help="how long to wait for the session to accept (default 30s)",
        )

    grants_module.add_grants_parser(commands, add)

    sessions = add(commands, "sessions", "list running sessions with status, agent and pending approvals")
    sessions.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    sessions.add_argument("--json", action="store_true")

    show = add(commands, "show", "a session's state, approvals, open tool calls and history")
    show.add_argument("session", metavar="SESSION")
    show.add_argument("--full", action="store_true", help="do not shorten long messages")
    show.add_argument("--json", action="store_true")

    export = add(commands, "export", "write a session's history (latest run) as JSON, for `replay FILE`")
    export.add_argument("session", metavar="SESSION")
    export.add_argument("-o", "--output", metavar="FILE", help="default: session-<id>.json; '-' for stdout")

    replaying = add(
        commands, "replay", "replay histories against the current workflow code; non-zero exit on nondeterminism"
    )
    replaying.add_argument("files", nargs="*", type=Path, metavar="FILE", help="exported history JSON files")
    replaying.add_argument(
        "--workflow-id",
        metavar="ID",
        help="replay every run of this workflow from the server; with FILEs, the workflow id of the files",
    )
    replaying.add_argument(
        "--query",
        metavar="QUERY",
        help=f"replay every execution this visibility query matches (default: {replay.DEFAULT_QUERY})",
    )
    replaying.add_argument("--limit", type=int, metavar="N", help="with --query, at most N executions")

    health = add(
        commands, "worker-health", "exit 0 if a worker on this host polls the task queue (container health check)"
    )
    health.add_argument("--hostname", default=socket.gethostname(), help="the host whose worker to look for")


def _add_listing_options(listing: argparse.ArgumentParser) -> None:
    listing.add_argument("--older-than", type=parse_duration, metavar="DURATION", help="e.g. 15m, 2h, 1d")
    listing.add_argument("--tool", metavar="NAME", help="only calls of this tool")
    listing.add_argument(
        "--session", dest="session_ids", action="append", metavar="ID", help="only this session (repeatable)"
    )
    listing.add_argument("--agent", choices=[a.value for a in AgentType], help="only calls this agent asked for")
    listing.add_argument("--scan", action="store_true", help="ask every running session, not the search attributes")
    listing.add_argument("--json", action="store_true", help="print a JSON array for scripts")
    listing.add_argument("--fail-if-any", action="store_true", help="exit 3 when any approval matches (monitoring)")


def run_operator_command(args: argparse.Namespace) -> int:
    """Run a parsed operator command and return its exit code; errors are reported on stderr."""
    try:
        return asyncio.run(_run(args))
    except Exception as err:
        code, message = _exit_for(err)
        if code is None:
            raise
        _err(f"agent-runtime {args.command}: {message}")
        return code


def _exit_for(err: Exception) -> tuple[int | None, str]:
    match err:
        case SettingsError() | UsageError():
            return EXIT_USAGE, str(err)
        case UnknownSessionError() | UnknownWorkflowError():
            return EXIT_UNKNOWN_SESSION, str(err)
        case UnknownCallIdError() | UnknownGrantError():
            return EXIT_UNKNOWN_CALL, str(err)
        case ApprovalAlreadyResolvedError():
            return EXIT_ALREADY_RESOLVED, str(err)
        case InvalidInputError():
            return EXIT_REFUSED, str(err)
        case SessionStuckError():
            return EXIT_TIMEOUT, str(err)
        case SessionClosedError():
            return EXIT_REFUSED, str(err)
        case RPCError() if err.status in (
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.UNAUTHENTICATED,
            RPCStatusCode.PERMISSION_DENIED,
        ):
            return EXIT_UNREACHABLE, f"Temporal refused or is unreachable: {err.message}"
        case RPCError() if err.status is RPCStatusCode.INVALID_ARGUMENT:
            return EXIT_USAGE, err.message
        case RuntimeError() if str(err).startswith("Failed client connect"):
            return EXIT_UNREACHABLE, f"cannot reach Temporal: {str(err).splitlines()[0]}"
    return None, ""


# What a command opened (the content store's connections), closed when the command ends.
_resources: contextvars.ContextVar[contextlib.AsyncExitStack] = contextvars.ContextVar("operator_resources")


async def _run(args: argparse.Namespace) -> int:
    async with contextlib.AsyncExitStack() as stack:
        _resources.set(stack)
        return await _COMMANDS[args.command](args)


async def _connect(answer_timeout: timedelta | None = None) -> tuple[Client, ConversationClient]:
    settings = load_settings()
    answer_timeout = answer_timeout or inbox_module.QUERY_TIMEOUT
    content = await _resources.get().enter_async_context(open_content_store(settings))
    client = await _traced_client(settings, content=content)
    conversations = ConversationClient(
        client, task_queue=settings.temporal.task_queue, content=content, answer_timeout=answer_timeout
    )
    return client, conversations


async def _traced_client(settings: Settings, content: ContentStore | None = None) -> Client:
    """A client with the process's telemetry (as the worker and the API have it), set up for the command's life:
    a decision taken here is traced like one from the API."""
    otel = await _resources.get().enter_async_context(telemetry(settings.otel))
    return await connect_client(settings, content=content, **otel.client_options())


# --- approvals ---


async def _approvals(args: argparse.Namespace) -> int:
    if args.action in (None, "list"):
        return await _approvals_list(args)
    _, conversations = await _connect(answer_timeout=args.timeout)
    receipt = await _decide(conversations, args)
    done = _DECISION_WORDS[Decision(args.action)]
    if receipt.duplicate:
        _out(f"{args.call_id} in session {args.session} was already {done}: no change")
    else:
        _out(f"{done} {args.call_id} in session {args.session}")
    return EXIT_OK


async def _decide(conversations: ConversationClient, args: argparse.Namespace) -> InputReceipt:
    """A tool approval takes a `hitl_decision`, a plan approval (by call or request id) a `plan_decision`."""
    try:
        decision = HitlDecision(
            call_id=args.call_id,
            decision=Decision(args.action),
            modified_arguments=getattr(args, "arguments", None),
            feedback=getattr(args, "feedback", None),
            remember=grants_module.remember_from(args),
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    return await decide_approval(conversations, args.session, decision)


async def _approvals_list(args: argparse.Namespace) -> int:
    client, conversations = await _connect()
    criteria = InboxFilter(
        older_than=args.older_than, tool=args.tool, session_ids=tuple(args.session_ids or ()), agent=args.agent
    )
    now = datetime.now(UTC)
    inbox = await find_pending_approvals(client, conversations, criteria, now=now, scan=args.scan)
    if inbox.scanned and not args.scan:
        _err("agent-runtime approvals: search attributes not registered; asked every running session instead")
    if inbox.silent:
        _err(
            f"agent-runtime approvals: {len(inbox.silent)} session(s) did not answer within "
            f"{duration(inbox_module.QUERY_TIMEOUT)} (is a worker running?): {', '.join(inbox.silent)}"
        )
    if args.json:
        _out(json.dumps([inbox_item(e, now).model_dump(mode="json") for e in inbox.entries], indent=2))
    else:
        _out(render_inbox(inbox.entries, now))
    return EXIT_APPROVALS_PENDING if args.fail_if_any and inbox.entries else EXIT_OK


# --- grants ---


async def _grants(args: argparse.Namespace) -> int:
    _, conversations = await _connect()
    return await grants_module.run_grants(args, conversations, _out)


# --- sessions, show, export ---


async def _sessions(args: argparse.Namespace) -> int:
    client, conversations = await _connect()
    summaries = await list_sessions(client, conversations, limit=args.limit)
    now = datetime.now(UTC)
    if args.json:
        _out(json.dumps([session_summary_json(s) for s in summaries], indent=2))
    else:
        _out(render_sessions(summaries, now))
    return EXIT_OK


async def _show(args: argparse.Namespace) -> int:
    _, conversations = await _connect()
    state = await conversations.state(args.session)
    history = await conversations.history(args.session)
    if args.json:
        dump = {"state": state.model_dump(mode="json"), "history": [m.model_dump(mode="json") for m in history]}
        _out(json.dumps(dump, indent=2))
    else:
        _out(render_session(state, history, now=datetime.now(UTC), full=args.full))
    return EXIT_OK


async def _export(args: argparse.Namespace) -> int:
    client, _ = await _connect()
    workflow_id = workflow_id_for(args.session)
    history = await replay.export_history(client, workflow_id)
    text = history.to_json()
    if args.output == "-":
        _out(text)
        return EXIT_OK
    path = Path(args.output or f"{workflow_id}.json")
    path.write_text(text, encoding="utf-8")
    _err(f"wrote {len(history.events)} events of run {history.run_id} to {path}")
    return EXIT_OK


async def _worker_health(args: argparse.Namespace) -> int:
    # No telemetry: a container health check runs every few seconds and must not wait on a collector.
    settings = load_settings()
    client = await connect_client(settings)
    idle = await idle_poll_kinds(client, settings.temporal.task_queue, args.hostname)
    if idle:
        _err(
            f"agent-runtime worker-health: no {' or '.join(idle)} poll from {args.hostname} on task queue "
            f"{settings.temporal.task_queue!r} in the last {duration(POLLER_FRESHNESS)}"
        )
        return EXIT_UNHEALTHY
    _out(f"worker on {args.hostname} polls task queue {settings.temporal.task_queue!r}")
    return EXIT_OK


# --- replay ---


async def _replay(args: argparse.Namespace) -> int:
    items: AsyncIterator[replay.HistoryItem]
    if args.files:
        if args.query is not None:
            raise UsageError("give FILEs or --query, not both")
        missing = [str(p) for p in args.files if not p.is_file()]
        if missing:
            raise UsageError(f"no such file: {', '.join(missing)}")
        items = replay.file_histories(args.files, workflow_id=args.workflow_id)
    else:
        if args.workflow_id is not None and args.query is not None:
            raise UsageError("give --workflow-id or --query, not both")
        client, _ = await _connect()
        if args.workflow_id is not None:
            items = replay.workflow_histories(client, args.workflow_id)
        else:
            items = replay.query_histories(client, args.query or replay.DEFAULT_QUERY, limit=args.limit)
    counts = dict.fromkeys(Verdict, 0)
    content = await _resources.get().enter_async_context(open_content_store(load_settings()))
    async for report in replay.replay_histories(items, workflows=replay.WORKFLOWS, content=content):
        counts[report.verdict] += 1
        where = f"  ({report.source})" if report.source != "server" else ""
        detail = f"  {report.detail}" if report.detail else ""
        _out(f"{report.verdict.value:<16}  {report.workflow_id}  run {report.run_id or '?'}{where}{detail}")
    total = sum(counts.values())
    summary = ", ".join(f"{n} {verdict.value}" for verdict, n in counts.items())
    _out(f"replayed {total} histor{'y' if total == 1 else 'ies'}: {summary}")
    if total == 0:
        _err("agent-runtime replay: nothing to replay")
    return EXIT_OK if counts[Verdict.OK] == total else EXIT_REPLAY_FAILED


_COMMANDS = {
    "approvals": _approvals,
    "grants": _grants,
    "sessions": _sessions,
    "show": _show,
    "export": _export,
    "replay": _replay,
    "worker-health": _worker_health,
}


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
