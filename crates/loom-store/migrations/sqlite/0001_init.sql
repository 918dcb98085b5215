-- Loom schema v1 (SQLite, the embedded default). Mirrors migrations/postgres/0001_init.sql.
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC); JSON columns are TEXT holding
-- JSON. Tables are STRICT so a wrongly typed value is an error, not a silent conversion.

CREATE TABLE projects (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    git_repo      TEXT NOT NULL,
    branch        TEXT NOT NULL,
    bead_prefix   TEXT NOT NULL,
    context       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(context)),
    git_strategy  TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

-- Bead ids are {prefix}-{base36(seq)}; one global counter (the PostgreSQL sequence), so a seq is
-- never reused, even after its bead was deleted.
CREATE TABLE bead_seq (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    value  INTEGER NOT NULL
) STRICT;
INSERT INTO bead_seq (id, value) VALUES (1, 0);

CREATE TABLE beads (
    id                TEXT PRIMARY KEY,
    seq               INTEGER NOT NULL UNIQUE,
    project_id        TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    title             TEXT NOT NULL,
    description       TEXT NOT NULL,
    bead_type         TEXT NOT NULL,
    priority          INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 3),
    status            TEXT NOT NULL CHECK (status IN ('open', 'in_progress', 'blocked', 'closed')),
    assignee          TEXT,
    tags              TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    context           TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(context)),
    parent            TEXT REFERENCES beads(id) ON DELETE SET NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    close_reason      TEXT,
    dispatch_id       TEXT UNIQUE,
    lease_expires_at  INTEGER,
    not_before        INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    closed_at         INTEGER,
    version           INTEGER NOT NULL DEFAULT 1,
    CHECK ((status = 'in_progress') = (dispatch_id IS NOT NULL AND lease_expires_at IS NOT NULL))
) STRICT;

-- The ready query walks this index in (priority, age) order and stops at its limit. SQLite uses a
-- partial index only when the query repeats its WHERE terms literally: keep them in sync with
-- `READY` in src/sqlite/dispatch.rs.
CREATE INDEX beads_ready ON beads (project_id, priority, seq) WHERE status = 'open' AND bead_type <> 'decision';
CREATE INDEX beads_project_seq ON beads (project_id, seq);
CREATE INDEX beads_status_seq ON beads (status, seq);
CREATE INDEX beads_leases ON beads (lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX beads_parent ON beads (parent) WHERE parent IS NOT NULL;

CREATE TABLE bead_deps (
    bead_id     TEXT NOT NULL REFERENCES beads(id) ON DELETE CASCADE,
    blocker_id  TEXT NOT NULL REFERENCES beads(id) ON DELETE CASCADE,
    PRIMARY KEY (bead_id, blocker_id),
    CHECK (bead_id <> blocker_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX bead_deps_blocker ON bead_deps (blocker_id);

-- AUTOINCREMENT: a seq (the events cursor) or an outbox id is never handed out twice.
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    source          TEXT NOT NULL,
    project_id      TEXT,
    entity_id       TEXT NOT NULL,
    action          TEXT NOT NULL,
    description     TEXT NOT NULL,
    data            TEXT NOT NULL CHECK (json_valid(data)),
    correlation_id  TEXT,
    created_at      INTEGER NOT NULL
) STRICT;

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    bead_id      TEXT NOT NULL,
    dispatch_id  TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    payload      TEXT NOT NULL CHECK (json_valid(payload)),
    created_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    project_id      TEXT NOT NULL,
    role            TEXT NOT NULL,
    instance        TEXT NOT NULL,
    status          TEXT NOT NULL,
    current_bead    TEXT,
    capacity        INTEGER NOT NULL,
    last_heartbeat  INTEGER NOT NULL
) STRICT;
CREATE INDEX agents_project ON agents (project_id);
