-- Every request that acted over HTTP: who (the token's name and role), what (method and
-- path), when, from where, and how it ended.
CREATE TABLE audit_log (
    id              BIGSERIAL PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    remote          TEXT NOT NULL
);
