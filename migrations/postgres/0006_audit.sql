-- The audit log: one record per change, written in the change's transaction.
-- Each record holds the hash of the one before it (prev_hash) and its own
-- hash over all its fields, so an edited, removed or reordered row breaks
-- the chain. before_state and after_state are JSON kept as the exact text
-- that was hashed.

CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL,
    actor_kind   TEXT NOT NULL,
    actor_id     TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    before_state TEXT,
    after_state  TEXT,
    ip           TEXT,
    request_id   TEXT,
    revision     BIGINT,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_log_by_at ON audit_log (at);
CREATE INDEX audit_log_by_target ON audit_log (target, seq);
CREATE INDEX audit_log_by_actor ON audit_log (actor_id, seq);

-- The end of the chain. Appending updates this one row, which serialises
-- appends (each needs the previous hash) and lets verification notice
-- records cut from the end.
CREATE TABLE audit_head (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- The record that gave a grant or an assignment its current form, for /v1/explain.
ALTER TABLE permissions ADD COLUMN audit_seq BIGINT;
ALTER TABLE role_assignments ADD COLUMN audit_seq BIGINT;
