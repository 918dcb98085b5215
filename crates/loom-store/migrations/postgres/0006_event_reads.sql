-- One project's events (`GET /events?project_id=`, its SSE stream) are read through this index,
-- so a quiet project behind a busy one costs a read of its own events only.
CREATE INDEX events_project_seq ON events (project_id, seq);
-- A page of events ends before a gap in the seqs that may still fill; finding one looks only at
-- the events created in the last seconds.
CREATE INDEX events_created_at ON events (created_at);
