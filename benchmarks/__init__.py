"""Benchmarks: scripts that print figures (not tests). Run them with `python -m benchmarks.<name>`.

`http_api`: latency and cost as a gateway sees them, over the HTTP API (SSE) and the WebSocket, per path of issue 11
(p50/p95/p99), CPU per turn over every process, history events and workflow tasks per turn.

`long_session`: whether a session's cost per turn stays flat over a long conversation (1,000 plain turns, 300 turns
with 100 KB tool results): turn latency and CPU by window, history per continue-as-new run, largest event, memory.

`scale`: how much one machine takes: sessions parked on an approval per worker process (worker RSS at 0 / 1k / 5k /
10k parked, time to park), approve -> re-emitted tool call for a session in the worker's sticky cache against one
evicted from it, throughput of concurrent seed flows over the HTTP API with one and two worker processes, and a
worker SIGKILLed mid-load (every conversation still answers, its history pairs and replays). The worker runs with the
`AGENT_RUNTIME__WORKER__*` settings (`--max-cached-workflows`, ... override them).

`stack` is shared, not a benchmark: the runtime as separate processes (Temporal dev server, PostgreSQL, workers, the
HTTP API, the fake LLM), their CPU and memory.
"""
