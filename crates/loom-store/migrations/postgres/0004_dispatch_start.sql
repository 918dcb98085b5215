-- Queued is not running: a dispatch gets a start time (and the agent running it) when an agent
-- reports that it started. Only started dispatches have a lease clock, so the sweep reads them
-- alone. A position table keeps where the event relay got to, across restarts and leaders.

ALTER TABLE beads ADD COLUMN started_at TIMESTAMPTZ;
ALTER TABLE beads ADD COLUMN started_by TEXT;
ALTER TABLE beads ADD CONSTRAINT beads_started_only_in_progress
    CHECK (started_at IS NULL OR status = 'in_progress');

DROP INDEX IF EXISTS beads_leases;
CREATE INDEX beads_leases ON beads (lease_expires_at) WHERE status = 'in_progress' AND started_at IS NOT NULL;

CREATE TABLE positions (
    name        TEXT PRIMARY KEY,
    position    BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- The event relay starts where the store's events end at this upgrade (an existing deployment
-- already relayed those); a fresh store starts at 0, so its very first events are relayed too.
INSERT INTO positions (name, position, updated_at)
SELECT 'event-relay', COALESCE(max(seq), 0), now() FROM events;
