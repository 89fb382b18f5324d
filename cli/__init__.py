"""The `agent-runtime` command and the operators' tools (approvals inbox, replay, export, sessions)."""
