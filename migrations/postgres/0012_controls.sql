-- A global apply freeze: while its one row exists no apply starts (queued applies wait for
-- the thaw); plans and drift checks go on.
CREATE TABLE apply_freeze (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    reason          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
-- Each stack's upstream stacks at its last discovery (a JSON list of paths), for its page.
ALTER TABLE stacks ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]';
-- Webhook deliveries seen, by X-GitHub-Delivery: a replayed delivery is ignored. The
-- retention sweeper forgets them after a week.
CREATE TABLE webhook_deliveries (
    delivery_id     TEXT PRIMARY KEY,
    received_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);
