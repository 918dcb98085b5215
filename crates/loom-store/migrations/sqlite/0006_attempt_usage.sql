-- What each attempt's model calls cost and said: the tokens (prompt, completion), the model and
-- provider that answered, the cost by the configured price table, and the conversation (a JSON
-- array, bounded and redacted by the agent). Per-project totals are summed through beads.

ALTER TABLE bead_attempts ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE bead_attempts ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE bead_attempts ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE bead_attempts ADD COLUMN provider TEXT NOT NULL DEFAULT '';
ALTER TABLE bead_attempts ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE bead_attempts ADD COLUMN conversation TEXT NOT NULL DEFAULT '';
