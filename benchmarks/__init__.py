"""Benchmarks: scripts that print figures (not tests). Run them with `python -m benchmarks.<name>`.

`http_api`: latency and cost as a gateway sees them, over the HTTP API (SSE) and the WebSocket, per path of issue 11
(p50/p95/p99), CPU per turn over every process, history events and workflow tasks per turn.

`long_session`: whether a session's cost per turn stays flat over a long conversation (1,000 plain turns, 300 turns
with 100 KB tool results): turn latency and CPU by window, history per continue-as-new run, largest event, memory.
"""
