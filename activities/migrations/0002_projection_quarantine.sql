-- Projection records PostgreSQL refused (activities/persistence.py): a value it cannot store even after the
-- writer made every string storable, a constraint, a number out of a column's range. Such a record is kept here,
-- as JSON with the error, instead of being retried forever; everything the session writes after it goes on.
-- Keyed like the projection itself: a resent batch quarantines nothing twice (`digest` is the SHA-256 of the
-- record's canonical JSON, so two versions of one record, e.g. a tool call open and then closed, are both kept).
CREATE TABLE projection_quarantine (
    id              bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    session_id      text        NOT NULL,
    kind            text        NOT NULL,
    record_key      text        NOT NULL,
    digest          text        NOT NULL,
    error           text        NOT NULL,
    record          jsonb       NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, kind, record_key, digest)
);
CREATE INDEX projection_quarantine_quarantined_at_idx ON projection_quarantine (quarantined_at);
