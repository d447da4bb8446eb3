-- Webhooks: who is told about what, and every message to tell them, kept
-- until it is delivered (written in the transaction of the change it tells).
CREATE TABLE posting_webhooks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    -- The signing secret, sealed (it must be read back to sign).
    secret TEXT NOT NULL,
    -- ["post.posted", ...]
    events TEXT NOT NULL,
    active BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX posting_webhooks_owner ON posting_webhooks (owner);

CREATE TABLE posting_webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES posting_webhooks (id),
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    -- When to try next; NULL once delivered or given up.
    next_ms BIGINT,
    -- pending | delivered | failed
    state TEXT NOT NULL,
    last_error TEXT,
    created_ms BIGINT NOT NULL,
    delivered_ms BIGINT
);
CREATE INDEX posting_webhook_deliveries_due ON posting_webhook_deliveries (state, next_ms);
