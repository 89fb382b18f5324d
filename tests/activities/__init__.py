"""The activities on real outside systems: the LLM activity against the fake provider over HTTP, the content store on
PostgreSQL and files."""
