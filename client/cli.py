"""The `agent-runtime` command: one entry point for every process of the runtime."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from client.demo import run_demo
from client.fake_llm import serve as serve_fake_llm
from settings import SettingsError, load_settings
from worker import run_worker
from workflows.selfcheck import InconsistentCatalogueError, find_problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-runtime", description="The Agent Runtime on Temporal.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("demo", help="play the seed incident end to end on the embedded stack, then stop")
    commands.add_parser("worker", help="run the Temporal worker (settings from AGENT_RUNTIME__* variables)")
    commands.add_parser("check", help="validate settings, agents, prompts, tools and the approval policy")
    fake = commands.add_parser("fake-llm", help="serve the scripted OpenAI-compatible fake LLM")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8002)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.command == "demo" else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        match args.command:
            case "demo":
                return asyncio.run(run_demo())
            case "worker":
                with contextlib.suppress(KeyboardInterrupt):
                    asyncio.run(run_worker(load_settings()))
                return 0
            case "check":
                problems = find_problems(load_settings().approval_policy())
                for problem in problems:
                    print(f"problem: {problem}")  # noqa: T201
                print("ok" if not problems else f"{len(problems)} problem(s)")  # noqa: T201
                return 1 if problems else 0
            case "fake-llm":
                serve_fake_llm(args.host, args.port)
                return 0
    except (SettingsError, InconsistentCatalogueError) as err:
        print(f"agent-runtime: {err}", file=sys.stderr)  # noqa: T201
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
