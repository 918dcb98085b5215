-- Results are kept: every applied result (never a stale or repeated one) becomes an attempt row,
-- keyed by its dispatch id, with what the agent reported. The output is a bounded tail.

CREATE TABLE bead_attempts (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    dispatch_id    TEXT NOT NULL UNIQUE,
    bead_id        TEXT NOT NULL REFERENCES beads(id) ON DELETE CASCADE,
    attempt        INTEGER NOT NULL,
    agent_id       TEXT NOT NULL,
    succeeded      INTEGER NOT NULL,
    error          TEXT,
    output         TEXT NOT NULL,
    commits        TEXT NOT NULL DEFAULT '[]',
    artifacts      TEXT NOT NULL DEFAULT '[]',
    created_beads  TEXT NOT NULL DEFAULT '[]',
    duration_ms    INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER NOT NULL
);
CREATE INDEX bead_attempts_bead ON bead_attempts (bead_id, seq);
