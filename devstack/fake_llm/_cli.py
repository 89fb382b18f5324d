"""The fake as a process of its own: `serve` (blocking, uvicorn) and `main`, the command line.

For a provider outside a test's event loop: `python -m devstack.fake_llm --port 8002` (`./run fake-llm`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import uvicorn

from devstack.fake_llm._app import create_app
from devstack.fake_llm._state import FakeLlm

# The name the module had before the package was split, so log configuration keyed on it still applies.
logger = logging.getLogger("devstack.fake_llm")


def serve(
    host: str,
    port: int,
    *,
    api_key: str | None = None,
    internal_api_key: str | None = None,
    context_window: int | None = None,
) -> None:
    """Serve the fake until interrupted (blocking); what `python -m devstack.fake_llm` runs."""
    app = create_app(FakeLlm(api_key=api_key, internal_api_key=internal_api_key, context_window=context_window))
    logger.info("Fake LLM listening on http://%s:%d/v1", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: `python -m devstack.fake_llm --port 8002`."""
    parser = argparse.ArgumentParser(prog="fake-llm", description="Scriptable OpenAI-compatible fake LLM server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--internal-api-key", default=None, help="require this X-Internal-Auth value")
    parser.add_argument(
        "--context-window",
        type=_positive_int,
        default=None,
        metavar="TOKENS",
        help="refuse prompts estimated at more tokens than this, as OpenAI does (context_length_exceeded)",
    )
    args = parser.parse_args(argv)
    serve(
        args.host,
        args.port,
        api_key=args.api_key,
        internal_api_key=args.internal_api_key,
        context_window=args.context_window,
    )
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of tokens, got {text!r}")
    return value
