-- The tables Starling created from strings before it kept a migration
-- history: IF NOT EXISTS, so a database from then takes this step as a no-op.
CREATE TABLE IF NOT EXISTS usage_records (
    request_id TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    key_id TEXT,
    route TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION NOT NULL,
    status BIGINT NOT NULL,
    error TEXT,
    cache_hit BOOLEAN NOT NULL,
    attempts BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_records_ts ON usage_records (ts_ms);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    budget_usd_per_day DOUBLE PRECISION,
    rpm BIGINT,
    tpm BIGINT,
    models TEXT
);
