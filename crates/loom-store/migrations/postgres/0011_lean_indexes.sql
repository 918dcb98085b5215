-- Every bead writes about forty index entries on its way from created to closed (each non-HOT
-- update of a row adds one to every index of the table), and on a busy server that index
-- maintenance is much of the database's CPU per bead. Three indexes held entries no query
-- reads:
--
-- * `events.id` is drawn by the store (UUIDv7 or gen_random_uuid()), never looked up by a query
--   and never the target of an upsert: its unique index was a random-order B-tree insert per
--   event (four per bead) that checked what holds by construction. The bus deduplicates by the
--   id (Nats-Msg-Id); `seq` stays the primary key.
-- * `beads.dispatch_id` is NULL on every bead not in progress; the lookups are by value
--   (`dispatch_id = $1`), so only the non-NULL ids need the (unique) index.
-- * `beads.tags`: a tag filter matches no bead without tags, so the GIN index holds only the
--   beads that have some (the filter adds `tags <> '[]'`, the index's predicate).
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_id_key;

ALTER TABLE beads DROP CONSTRAINT IF EXISTS beads_dispatch_id_key;
CREATE UNIQUE INDEX beads_dispatch_id ON beads (dispatch_id) WHERE dispatch_id IS NOT NULL;

DROP INDEX IF EXISTS beads_tags;
CREATE INDEX beads_tags ON beads USING GIN (tags jsonb_path_ops) WHERE tags <> '[]'::jsonb;
