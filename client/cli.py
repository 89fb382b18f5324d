"""The `agent-runtime` command: one entry point for every process of the runtime."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

import asyncpg

from activities.postgres import MigrationError
from client.api import serve as serve_api
from client.database import EmbeddedPostgresError, run_migrations
from client.demo import run_demo
from client.dev import DevOptions, DevStackUnavailable, run_dev
from client.fake_llm import serve as serve_fake_llm
from client.operators import OPERATOR_COMMANDS, add_operator_commands, run_operator_command
from settings import SettingsError, load_settings
from worker import run_worker
from workflows.selfcheck import InconsistentCatalogueError, find_problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-runtime", description="The Agent Runtime on Temporal.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("demo", help="play the seed incident end to end on the embedded stack, then stop")
    dev = commands.add_parser(
        "dev",
        help="run the whole stack in the foreground: Temporal (+ Web UI), PostgreSQL, fake LLM, worker, HTTP API",
        description="Embedded pieces unless configured: AGENT_RUNTIME__TEMPORAL__ADDRESS, DATABASE_URL and "
        "AGENT_RUNTIME__LLM_PROXY_URL point at real ones. Ctrl-C stops everything.",
    )
    dev.add_argument(
        "--data-dir", type=Path, default=DevOptions.data_dir, help="Temporal SQLite file and PostgreSQL data"
    )
    dev.add_argument("--host", default=DevOptions.host, help="interface every piece binds to")
    dev.add_argument("--temporal-port", type=int, default=DevOptions.temporal_port)
    dev.add_argument("--ui-port", type=int, default=DevOptions.ui_port, help="Temporal Web UI")
    dev.add_argument("--llm-port", type=int, default=DevOptions.llm_port, help="the fake LLM")
    dev.add_argument("--api-port", type=int, default=DevOptions.api_port, help="the HTTP API")
    commands.add_parser(
        "migrate",
        help="apply the PostgreSQL projection's schema migrations (DATABASE_URL or AGENT_RUNTIME__DATABASE_URL)",
    )
    commands.add_parser("worker", help="run the Temporal worker (settings from AGENT_RUNTIME__* variables)")
    commands.add_parser("check", help="validate settings, agents, prompts, tools and the approval policy")
    api = commands.add_parser("api", help="serve the HTTP API (gateway contract, SSE, IDE WebSocket)")
    api.add_argument("--host", default=None, help="interface to bind (default: AGENT_RUNTIME__API__HOST, 127.0.0.1)")
    api.add_argument("--port", type=int, default=None, help="port (default: AGENT_RUNTIME__API__PORT, 8001)")
    fake = commands.add_parser("fake-llm", help="serve the scripted OpenAI-compatible fake LLM")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8002)
    add_operator_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.command == "demo" or args.command in OPERATOR_COMMANDS else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command in OPERATOR_COMMANDS:
        return run_operator_command(args)
    try:
        match args.command:
            case "demo":
                return asyncio.run(run_demo())
            case "dev":
                options = DevOptions(
                    data_dir=args.data_dir,
                    host=args.host,
                    temporal_port=args.temporal_port,
                    ui_port=args.ui_port,
                    llm_port=args.llm_port,
                    api_port=args.api_port,
                )
                return asyncio.run(run_dev(load_settings(), options))
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
            case "fake-llm":
                serve_fake_llm(args.host, args.port)
                return 0
    except (SettingsError, InconsistentCatalogueError) as err:
        print(f"agent-runtime: {err}", file=sys.stderr)  # noqa: T201
        return 2
    except (DevStackUnavailable, EmbeddedPostgresError, MigrationError) as err:
        print(f"agent-runtime {args.command}: {err}", file=sys.stderr)  # noqa: T201
        return 1
    except (OSError, asyncpg.PostgresError) as err:
        print(f"agent-runtime {args.command}: cannot reach PostgreSQL: {err}", file=sys.stderr)  # noqa: T201
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
