"""The PostgreSQL projection on an embedded PostgreSQL: what conversations leave in it, the writer, the outbox."""
