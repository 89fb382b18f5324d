#!/bin/sh
# Runs once, when the PostgreSQL data volume is created: the runtime's projection gets its own role and database
# next to Temporal's (`temporal`, `temporal_visibility`). The schema itself comes from `agent-runtime migrate`.
set -eu
psql --username "$POSTGRES_USER" --dbname postgres --set ON_ERROR_STOP=1 \
    --set password="$AGENT_RUNTIME_DB_PASSWORD" <<'SQL'
CREATE ROLE agent_runtime LOGIN PASSWORD :'password';
CREATE DATABASE agent_runtime OWNER agent_runtime;
SQL
