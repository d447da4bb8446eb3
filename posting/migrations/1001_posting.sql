-- The posting service's tables (versions 1001..2000 are posting's). Every
-- instant is Unix milliseconds, UTC; a time zone is an IANA name. JSON
-- columns are TEXT; flags are BIGINT 0/1 (sqlx's Any driver reads no SQLite
-- booleans). `owner` is the API key id that created the row ('' when
-- keys are not in use): every read filters on it.
CREATE TABLE posting_accounts (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    platform TEXT NOT NULL,
    handle TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    daily_cap BIGINT NOT NULL,
    max_length BIGINT,
    -- Sealed with the service's secret key (see posting::secrets); NULL:
    -- none (dry-run accounts).
    credentials TEXT,
    -- Bumped by every credentials write: a refresh that read an older
    -- version loses the race instead of storing a stale token.
    credentials_version BIGINT NOT NULL DEFAULT 0,
    -- active | needs_reauth | suspended
    status TEXT NOT NULL,
    status_reason TEXT,
    -- The platform asked us to wait (rate limits): no post goes out before.
    paused_until_ms BIGINT,
    -- The platform's own id for the account (X: /2/users/me).
    remote_id TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX posting_accounts_handle ON posting_accounts (owner, platform, handle);

CREATE TABLE posting_campaigns (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES posting_accounts (id),
    name TEXT NOT NULL,
    niche TEXT NOT NULL,
    -- active | paused | completed
    status TEXT NOT NULL,
    -- {"mon": ["09:00", "17:30"], ...} in the account's time zone.
    slots TEXT NOT NULL,
    link_url TEXT,
    -- hashtag | paid_partnership | none
    disclosure TEXT NOT NULL,
    banned_terms TEXT NOT NULL,
    variants TEXT NOT NULL,
    products TEXT NOT NULL,
    -- required | auto
    approval TEXT NOT NULL,
    link_budget_usd DOUBLE PRECISION,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX posting_campaigns_owner ON posting_campaigns (owner, created_ms);

CREATE TABLE posting_posts (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES posting_accounts (id),
    campaign_id TEXT REFERENCES posting_campaigns (id),
    variant TEXT,
    -- [{"text": "...", "media": ["..."]}]: one part, or a thread.
    parts TEXT NOT NULL,
    affiliate BIGINT NOT NULL,
    paid_partnership BIGINT NOT NULL,
    made_with_ai BIGINT NOT NULL,
    has_link BIGINT NOT NULL,
    -- draft | approved | scheduled | claimed | attempting | posted |
    -- failed | unknown | blocked | cancelled
    state TEXT NOT NULL,
    scheduled_ms BIGINT,
    -- When the dispatcher may next take it (the schedule, or a retry's
    -- time); NULL when it is not waiting for the dispatcher.
    due_ms BIGINT,
    lease_owner TEXT,
    lease_until_ms BIGINT,
    attempts BIGINT NOT NULL,
    -- Started sending the part after the ones in external_ids.
    attempt_started_ms BIGINT,
    -- ["id of part 1", ...]: the parts posted so far.
    external_ids TEXT NOT NULL,
    reconcile_checks BIGINT NOT NULL,
    last_error TEXT,
    posted_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX posting_posts_due ON posting_posts (state, due_ms);
CREATE INDEX posting_posts_account ON posting_posts (account_id, state, posted_ms);
CREATE INDEX posting_posts_owner ON posting_posts (owner, created_ms, id);

-- Every state change of a post, with why.
CREATE TABLE posting_post_events (
    id TEXT PRIMARY KEY,
    post_id TEXT NOT NULL REFERENCES posting_posts (id),
    -- 1, 2, ... per post: written in the transaction that changed the
    -- post's row, so two changes of one post never share a number.
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    detail TEXT
);
CREATE UNIQUE INDEX posting_post_events_post ON posting_post_events (post_id, seq);

-- The dry-run platform's posts: what would have gone out.
CREATE TABLE posting_outbox (
    external_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    text TEXT NOT NULL,
    reply_to TEXT,
    posted_ms BIGINT NOT NULL
);
CREATE INDEX posting_outbox_account ON posting_outbox (account_id, posted_ms);
