-- Indexes on every column that references runs(id) and had none, so deleting a run (the
-- retention sweep) finds the rows pointing at it through an index instead of scanning each
-- table once per deleted run.
CREATE INDEX runs_plan_run ON runs (plan_run_id) WHERE plan_run_id IS NOT NULL;
CREATE INDEX runs_reviewed_run ON runs (reviewed_run_id) WHERE reviewed_run_id IS NOT NULL;
CREATE INDEX run_deps_upstream ON run_deps (upstream_id);
CREATE INDEX state_versions_run ON state_versions (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX drift_checks_run ON drift_checks (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX drift_states_run ON drift_states (last_check_run) WHERE last_check_run IS NOT NULL;
CREATE INDEX notification_outbox_run ON notification_outbox (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX state_locks_run ON state_locks (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX stack_locks_run ON stack_locks (run_id) WHERE run_id IS NOT NULL;
