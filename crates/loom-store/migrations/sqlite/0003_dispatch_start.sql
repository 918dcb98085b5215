-- Queued is not running: a dispatch gets a start time (and the agent running it) when an agent
-- reports that it started. Only started dispatches have a lease clock, so the sweep reads them
-- alone. A position table keeps where the event relay got to, across restarts.

ALTER TABLE beads ADD COLUMN started_at INTEGER;
ALTER TABLE beads ADD COLUMN started_by TEXT;

DROP INDEX IF EXISTS beads_leases;
CREATE INDEX beads_leases ON beads (lease_expires_at) WHERE status = 'in_progress' AND started_at IS NOT NULL;

CREATE TABLE positions (
    name        TEXT PRIMARY KEY,
    position    INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- The event relay starts where the store's events end at this upgrade (an existing deployment
-- already relayed those); a fresh store starts at 0, so its very first events are relayed too.
INSERT INTO positions (name, position, updated_at)
SELECT 'event-relay', COALESCE(max(seq), 0), CAST(strftime('%s', 'now') AS INTEGER) * 1000000 FROM events;
