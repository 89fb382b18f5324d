-- The read projection of the conversation workflows (activities/persistence.py writes it, idempotently).
-- The workflow is the source of truth; these tables are append-mostly: rows are inserted once, keyed by the ids
-- the workflow gave them, and only the columns that legitimately change are ever updated. Nothing is deleted.
-- Every key is scoped to its session (ids such as the LLM's call ids are only unique within one conversation).

CREATE TABLE sessions (
    session_id      text        PRIMARY KEY,
    title           text,
    current_agent   text        NOT NULL,
    status          text        NOT NULL,
    message_count   integer     NOT NULL,
    created_at      timestamptz NOT NULL,
    last_activity   timestamptz NOT NULL,
    counters        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_last_activity_idx ON sessions (last_activity DESC);
CREATE INDEX sessions_status_idx ON sessions (status);
CREATE INDEX sessions_created_at_idx ON sessions (created_at);

-- One row per history position. An assistant message's tool_calls are updated in place when a human edited a
-- call's arguments (the row is never deleted and re-inserted: bug L7).
CREATE TABLE messages (
    session_id      text        NOT NULL,
    seq             integer     NOT NULL,
    message_id      text        NOT NULL,
    role            text        NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content         text,
    name            text,
    tool_call_id    text,
    tool_calls      jsonb,
    agent           text,
    created_at      timestamptz,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX messages_message_id_idx ON messages (message_id);
CREATE INDEX messages_tool_call_id_idx ON messages (session_id, tool_call_id) WHERE tool_call_id IS NOT NULL;
CREATE INDEX messages_created_at_idx ON messages (created_at);

-- A tool call from request to outcome; `original_arguments` keeps what the LLM asked for, `arguments` what was
-- executed (they differ after an edit).
CREATE TABLE tool_calls (
    session_id          text        NOT NULL,
    call_id             text        NOT NULL,
    tool_name           text        NOT NULL,
    original_arguments  jsonb       NOT NULL,
    arguments           jsonb       NOT NULL,
    agent               text        NOT NULL,
    requested_at        timestamptz NOT NULL,
    outcome             text,
    result              text,
    closed_at           timestamptz,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, call_id)
);
CREATE INDEX tool_calls_outcome_idx ON tool_calls (outcome);
CREATE INDEX tool_calls_tool_name_idx ON tool_calls (tool_name);
CREATE INDEX tool_calls_requested_at_idx ON tool_calls (requested_at);

-- An approval as it is now (its status only moves forward: pending -> approved | rejected | expired) ...
CREATE TABLE approvals (
    session_id          text        NOT NULL,
    request_id          text        NOT NULL,
    request_type        text        NOT NULL,
    call_id             text        NOT NULL,
    tool_name           text        NOT NULL,
    subject             text        NOT NULL,
    arguments           jsonb       NOT NULL,
    edited_arguments    jsonb,
    reason              text        NOT NULL,
    agent               text        NOT NULL,
    status              text        NOT NULL,
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz,
    decided_at          timestamptz,
    decided_by          text,
    decision            text,
    feedback            text,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, request_id)
);
CREATE INDEX approvals_status_created_at_idx ON approvals (status, created_at);
CREATE INDEX approvals_call_id_idx ON approvals (session_id, call_id);
CREATE INDEX approvals_created_at_idx ON approvals (created_at);

-- ... and its trail: one row per distinct status it went through, with the approval as it was then.
CREATE TABLE approval_events (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    session_id      text        NOT NULL,
    request_id      text        NOT NULL,
    status          text        NOT NULL,
    at              timestamptz NOT NULL,
    decided_by      text,
    decision        text,
    feedback        text,
    edited_arguments jsonb,
    snapshot        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, request_id, status)
);
CREATE INDEX approval_events_at_idx ON approval_events (at);

CREATE TABLE agent_switches (
    session_id      text        NOT NULL,
    seq             integer     NOT NULL,
    from_agent      text,
    to_agent        text        NOT NULL,
    reason          text        NOT NULL,
    confidence      text,
    source          text        NOT NULL,
    switched_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX agent_switches_switched_at_idx ON agent_switches (switched_at);

CREATE TABLE llm_requests (
    session_id          text        NOT NULL,
    request_id          text        NOT NULL,
    purpose             text        NOT NULL,
    agent               text        NOT NULL,
    model               text        NOT NULL,
    ok                  boolean     NOT NULL,
    prompt_tokens       integer     NOT NULL,
    completion_tokens   integer     NOT NULL,
    total_tokens        integer     NOT NULL,
    latency_ms          integer     NOT NULL,
    finish_reason       text,
    error               text,
    created_at          timestamptz NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, request_id)
);
CREATE INDEX llm_requests_created_at_idx ON llm_requests (created_at);

-- A plan with its subtasks as they are now; the newest `updated_at` wins.
CREATE TABLE plans (
    session_id          text        NOT NULL,
    plan_id             text        NOT NULL,
    title               text        NOT NULL,
    status              text        NOT NULL,
    call_id             text        NOT NULL,
    approval_request_id text        NOT NULL,
    plan                jsonb       NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, plan_id)
);
CREATE INDEX plans_status_idx ON plans (status);

-- Every event a session streamed (the audit log); `id` keeps the order they were written in.
CREATE TABLE events (
    id              bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    session_id      text        NOT NULL,
    event_id        text        NOT NULL,
    type            text        NOT NULL,
    chunk           jsonb       NOT NULL,
    created_at      timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, event_id)
);
CREATE INDEX events_session_order_idx ON events (session_id, id);
CREATE INDEX events_type_idx ON events (type);
CREATE INDEX events_created_at_idx ON events (created_at);
