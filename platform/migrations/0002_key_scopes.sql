-- What a key may do beyond its own requests: comma-separated scopes
-- (`admin`: every key's usage). NULL: none.
ALTER TABLE api_keys ADD COLUMN scopes TEXT;
-- A key's own usage (GET /v1/usage, its daily budget) without a full scan.
CREATE INDEX usage_records_key_ts ON usage_records (key_id, ts_ms);
