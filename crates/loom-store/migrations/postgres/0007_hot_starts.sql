-- Starts and progress are the most frequent writes to a bead, and neither changes its status. With
-- no index on the lease columns they are heap-only (HOT) updates: no index is written, the row's
-- page is pruned in place. Room is left on each page for that. The lease sweep finds running
-- beads through `beads_status_seq` instead: dispatch follows agent capacity, so they are few.

DROP INDEX IF EXISTS beads_leases;
ALTER TABLE beads SET (fillfactor = 85);
