"""Benchmarks: scripts that print figures (not tests). Run them with `python -m benchmarks.<name>`.

`long_session`: whether a session's cost per turn stays flat over a long conversation (1,000 plain turns, 300 turns
with 100 KB tool results): turn latency and CPU by window, history per continue-as-new run, largest event, memory.
"""
