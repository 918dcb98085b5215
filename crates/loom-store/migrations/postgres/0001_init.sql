-- Loom schema v1 (PostgreSQL). Timestamps are timestamptz; JSON columns are jsonb.

CREATE TABLE projects (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    git_repo      TEXT NOT NULL,
    branch        TEXT NOT NULL,
    bead_prefix   TEXT NOT NULL,
    context       JSONB NOT NULL DEFAULT '{}',
    git_strategy  TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- Bead ids are {prefix}-{base36(seq)}; one global sequence, so creating beads touches no hot row.
CREATE SEQUENCE bead_seq;

CREATE TABLE beads (
    id                TEXT PRIMARY KEY,
    seq               BIGINT NOT NULL UNIQUE,
    project_id        TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    title             TEXT NOT NULL,
    description       TEXT NOT NULL,
    bead_type         TEXT NOT NULL,
    priority          BIGINT NOT NULL CHECK (priority BETWEEN 0 AND 3),
    status            TEXT NOT NULL CHECK (status IN ('open', 'in_progress', 'blocked', 'closed')),
    assignee          TEXT,
    tags              JSONB NOT NULL DEFAULT '[]',
    context           JSONB NOT NULL DEFAULT '{}',
    parent            TEXT REFERENCES beads(id) ON DELETE SET NULL,
    attempts          BIGINT NOT NULL DEFAULT 0,
    last_error        TEXT,
    close_reason      TEXT,
    dispatch_id       TEXT UNIQUE,
    lease_expires_at  TIMESTAMPTZ,
    not_before        TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    closed_at         TIMESTAMPTZ,
    version           BIGINT NOT NULL DEFAULT 1,
    CHECK ((status = 'in_progress') = (dispatch_id IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- The ready query walks this index in (priority, age) order and stops at its limit.
CREATE INDEX beads_ready ON beads (project_id, priority, seq) WHERE status = 'open' AND bead_type <> 'decision';
CREATE INDEX beads_project_seq ON beads (project_id, seq);
CREATE INDEX beads_status_seq ON beads (status, seq);
CREATE INDEX beads_leases ON beads (lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX beads_parent ON beads (parent) WHERE parent IS NOT NULL;
CREATE INDEX beads_tags ON beads USING GIN (tags jsonb_path_ops);

CREATE TABLE bead_deps (
    bead_id     TEXT NOT NULL REFERENCES beads(id) ON DELETE CASCADE,
    blocker_id  TEXT NOT NULL REFERENCES beads(id) ON DELETE CASCADE,
    PRIMARY KEY (bead_id, blocker_id),
    CHECK (bead_id <> blocker_id)
);
CREATE INDEX bead_deps_blocker ON bead_deps (blocker_id);

CREATE TABLE events (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    source          TEXT NOT NULL,
    project_id      TEXT,
    entity_id       TEXT NOT NULL,
    action          TEXT NOT NULL,
    description     TEXT NOT NULL,
    data            JSONB NOT NULL,
    correlation_id  TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    bead_id      TEXT NOT NULL,
    dispatch_id  TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    payload      JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    project_id      TEXT NOT NULL,
    role            TEXT NOT NULL,
    instance        TEXT NOT NULL,
    status          TEXT NOT NULL,
    current_bead    TEXT,
    capacity        BIGINT NOT NULL,
    last_heartbeat  TIMESTAMPTZ NOT NULL
);
CREATE INDEX agents_project ON agents (project_id);
