"""The embedded dev stack: Temporal and PostgreSQL from wheels, the fake LLM, the demo (never in a production
image; nothing outside this package and the tests imports it)."""
