-- The content store (activities/payload_drivers.py): large text kept outside Temporal's history by reference
-- (tool results, file contents, long answers, archived transcript segments) and Temporal payloads over the external
-- storage threshold. Content-addressed: the key is the SHA-256 of the stored bytes, so writing the same content
-- twice stores it once, and a reference can never point at changed content. Rows are never updated.

CREATE TABLE payloads (
    sha256      text        PRIMARY KEY,
    size        bigint      NOT NULL,
    data        bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
