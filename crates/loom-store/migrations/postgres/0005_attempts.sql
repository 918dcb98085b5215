-- Results are kept: every applied result (never a stale or repeated one) becomes an attempt row,
-- keyed by its dispatch id, with what the agent reported. The output is a bounded tail.

CREATE TABLE bead_attempts (
    seq            BIGSERIAL UNIQUE,
    dispatch_id    TEXT PRIMARY KEY,
    bead_id        TEXT NOT NULL REFERENCES beads(id) ON DELETE CASCADE,
    attempt        BIGINT NOT NULL,
    agent_id       TEXT NOT NULL,
    succeeded      BOOLEAN NOT NULL,
    error          TEXT,
    output         TEXT NOT NULL,
    commits        JSONB NOT NULL DEFAULT '[]',
    artifacts      JSONB NOT NULL DEFAULT '[]',
    created_beads  JSONB NOT NULL DEFAULT '[]',
    duration_ms    BIGINT NOT NULL,
    started_at     TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX bead_attempts_bead ON bead_attempts (bead_id, seq);
