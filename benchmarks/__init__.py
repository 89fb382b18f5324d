"""Benchmarks: scripts that print figures (not tests). Run them with `python -m benchmarks.<name>`."""
