"""`agent-runtime grants`: the remembered decisions of a session or a project, listed and revoked; and the
`--remember` options of `agent-runtime approvals approve`, which create them (workflows/grants.py)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cli.render import age, table
from client.conversation_client import ConversationClient
from workflows.model import ApprovalGrant, GrantScope, RememberDecision

Add = Callable[[Any, str, str], argparse.ArgumentParser]


def add_grants_parser(commands: Any, add: Add) -> None:
    """Register `grants list` and `grants revoke` on the `agent-runtime` parser."""
    grants = add(commands, "grants", "remembered decisions: approvals that also hold for later matching calls")
    actions = grants.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = add(actions, "list", "list the remembered decisions of a session or a project")
    _add_owner(listing)
    listing.add_argument("--all", action="store_true", help="also the newest revoked ones")
    listing.add_argument("--json", action="store_true", help="print a JSON array for scripts")
    revoke = add(actions, "revoke", "forget a remembered decision: the calls it approved ask again")
    _add_owner(revoke)
    revoke.add_argument("grant_id", metavar="GRANT_ID")
    revoke.add_argument("--reason", metavar="TEXT", help="kept with the revoked decision")


def add_remember_options(approve: argparse.ArgumentParser) -> None:
    """`approvals approve ... --remember session|project`: the approval also holds for later matching calls."""
    approve.add_argument(
        "--remember",
        choices=[GrantScope.SESSION.value, GrantScope.PROJECT.value],
        help="also approve later matching calls of this session, or of every session of --project",
    )
    approve.add_argument("--project", metavar="NAME", help="with --remember project: the project's name")
    approve.add_argument(
        "--command-words",
        type=int,
        metavar="N",
        help="commands: remember the program and its first arguments, N words in all (default: the exact command)",
    )
    approve.add_argument(
        "--path-prefix", metavar="DIR", help="file tools: remember every path under DIR (default: the exact path)"
    )


def remember_from(args: argparse.Namespace) -> RememberDecision | None:
    """The `RememberDecision` the approve options ask for (pydantic refuses a malformed one: exit 2)."""
    scope = getattr(args, "remember", None)
    if scope is None:
        if any(getattr(args, name, None) is not None for name in ("project", "command_words", "path_prefix")):
            raise ValueError("--project, --command-words and --path-prefix need --remember")
        return None
    return RememberDecision(
        scope=GrantScope(scope), project=args.project, command_words=args.command_words, path_prefix=args.path_prefix
    )


async def run_grants(args: argparse.Namespace, conversations: ConversationClient, out: Callable[[str], None]) -> int:
    """`grants list` or `grants revoke`; returns the exit code (errors are raised for the caller to map)."""
    if args.action == "list":
        if args.session is not None:
            grants = await conversations.grants(args.session, include_revoked=args.all)
        else:
            found = await conversations.project_grants(args.project)
            grants = [*found.grants, *(found.revoked if args.all else [])]
        out(json.dumps([g.model_dump(mode="json") for g in grants], indent=2) if args.json else render_grants(grants))
        return 0
    if args.session is not None:
        receipt = await conversations.revoke_grant(args.session, args.grant_id, args.reason)
        where = f"session {args.session}"
        duplicate = receipt.duplicate
    else:
        before = await conversations.project_grants(args.project)
        await conversations.revoke_project_grant(args.project, args.grant_id, args.reason)
        where = f"project {args.project}"
        duplicate = not any(g.grant_id == args.grant_id for g in before.grants)
    out(
        f"{args.grant_id} in {where} was already revoked: no change"
        if duplicate
        else f"revoked {args.grant_id} in {where}"
    )
    return 0


def render_grants(grants: Sequence[ApprovalGrant], now: datetime | None = None) -> str:
    """One row per remembered decision, newest last."""
    if not grants:
        return "no remembered decisions"
    now = now or datetime.now(UTC)
    rows = [
        (
            g.grant_id,
            g.scope if g.scope == "session" else f"project {g.project}",
            g.description,
            age(now, g.created_at),
            g.session_id,
            "active" if g.revoked_at is None else f"revoked {age(now, g.revoked_at)} ago",
        )
        for g in grants
    ]
    return table(("GRANT", "SCOPE", "APPROVES", "AGE", "FROM SESSION", "STATUS"), rows)


def _add_owner(parser: argparse.ArgumentParser) -> None:
    owner = parser.add_mutually_exclusive_group(required=True)
    owner.add_argument("--session", metavar="ID", help="the session (without the 'session-' prefix)")
    owner.add_argument("--project", metavar="NAME", help="the project")
