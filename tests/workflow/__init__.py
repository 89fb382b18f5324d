"""The conversation workflow on a real Temporal server (time-skipping or dev) with the product worker and the fake
LLM: the spec's scenarios, signals, replay, telemetry and the Web UI's search attributes."""
