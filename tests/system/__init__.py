"""Whole processes: the worker and the demo as subprocesses, kill and restart (durability), the operator CLI."""
