-- What each attempt's model calls cost and said: the tokens (prompt, completion), the model and
-- provider that answered, the cost by the configured price table, and the conversation (a JSON
-- array, bounded and redacted by the agent; TEXT, so a store never refuses a result over it).
-- Per-project totals are summed through beads(project_id).

ALTER TABLE bead_attempts
    ADD COLUMN prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN completion_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN model             TEXT NOT NULL DEFAULT '',
    ADD COLUMN provider          TEXT NOT NULL DEFAULT '',
    ADD COLUMN cost_usd          DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN conversation      TEXT NOT NULL DEFAULT '';
