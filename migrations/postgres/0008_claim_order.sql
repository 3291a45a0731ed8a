-- The claim takes the queued run of highest priority, oldest first. An index in exactly that
-- order lets it stop at the first runnable row instead of sorting every queued run.
DROP INDEX runs_queue;
CREATE INDEX runs_queue ON runs (status, priority DESC, id);
