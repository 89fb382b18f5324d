"""The embedded dev stack itself: Temporal servers and PostgreSQL from wheels, the fake LLM, `./run dev`."""
