"""The `agent-runtime` command: one entry point for every process of a deployment and for operators.

The embedded dev stack (Temporal dev server, PostgreSQL, the fake LLM, the demo) is not here: it is an optional
extra, never in a production image, run with `python -m devstack` (`./run dev`, `./run demo`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import TextIO

import asyncpg

from activities.postgres import MigrationError, apply_migrations, describe_dsn
from api import serve as serve_api
from cli.operators import OPERATOR_COMMANDS, add_operator_commands, run_operator_command
from settings import Settings, SettingsError, load_settings
from worker import run_worker
from workflows.selfcheck import InconsistentCatalogueError, find_problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-runtime", description="The Agent Runtime on Temporal.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "migrate",
        help="apply the PostgreSQL projection's schema migrations (DATABASE_URL or AGENT_RUNTIME__DATABASE_URL)",
    )
    commands.add_parser("worker", help="run the Temporal worker (settings from AGENT_RUNTIME__* variables)")
    commands.add_parser("check", help="validate settings, agents, prompts, tools and the approval policy")
    api = commands.add_parser("api", help="serve the HTTP API (gateway contract, SSE, IDE WebSocket)")
    api.add_argument("--host", default=None, help="interface to bind (default: AGENT_RUNTIME__API__HOST, 127.0.0.1)")
    api.add_argument("--port", type=int, default=None, help="port (default: AGENT_RUNTIME__API__PORT, 8001)")
    add_operator_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.command in OPERATOR_COMMANDS else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command in OPERATOR_COMMANDS:
        return run_operator_command(args)
    try:
        match args.command:
            case "migrate":
                return asyncio.run(run_migrations(load_settings()))
            case "worker":
                asyncio.run(run_worker(load_settings()))
                return 0
            case "check":
                problems = find_problems(load_settings().approval_policy())
                for problem in problems:
                    print(f"problem: {problem}")  # noqa: T201
                print("ok" if not problems else f"{len(problems)} problem(s)")  # noqa: T201
                return 1 if problems else 0
            case "api":
                settings = load_settings()
                with contextlib.suppress(KeyboardInterrupt):
                    serve_api(
                        settings,
                        args.host if args.host is not None else settings.api.host,
                        args.port if args.port is not None else settings.api.port,
                    )
                return 0
    except (SettingsError, InconsistentCatalogueError) as err:
        print(f"agent-runtime: {err}", file=sys.stderr)  # noqa: T201
        return 2
    except MigrationError as err:
        print(f"agent-runtime {args.command}: {err}", file=sys.stderr)  # noqa: T201
        return 1
    except (OSError, asyncpg.PostgresError) as err:
        print(f"agent-runtime {args.command}: cannot reach PostgreSQL: {err}", file=sys.stderr)  # noqa: T201
        return 1
    return 2


async def run_migrations(settings: Settings, out: TextIO | None = None) -> int:
    """`agent-runtime migrate`: bring the configured database's schema up to date; returns the exit code."""
    out = out or sys.stdout
    if settings.database_url is None:
        out.write(
            "agent-runtime migrate: no database configured; set DATABASE_URL (or AGENT_RUNTIME__DATABASE_URL). "
            "`agent-runtime dev` migrates its embedded PostgreSQL itself.\n"
        )
        return 2
    dsn = settings.database_url.get_secret_value()
    applied = await apply_migrations(dsn)
    for migration in applied:
        out.write(f"applied {migration.version:04d}_{migration.name}\n")
    out.write(f"{describe_dsn(dsn)}: schema up to date ({len(applied)} applied now)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
