-- X sign-in, refresh leases, products, links and clicks, metrics.

-- A pending OAuth 2.0 authorisation: the state sent to the platform, the
-- PKCE verifier (sealed) and the account settings asked for. Single use.
CREATE TABLE posting_oauth_states (
    state TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    platform TEXT NOT NULL,
    verifier TEXT NOT NULL,
    settings TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- One token refresh at a time per account, across replicas: a refresh takes
-- this lease first.
ALTER TABLE posting_accounts ADD COLUMN refresh_lease_until_ms BIGINT;

CREATE TABLE posting_products (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    price DOUBLE PRECISION,
    currency TEXT,
    commission_rate DOUBLE PRECISION,
    features TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX posting_products_sku ON posting_products (owner, sku);

-- A short link: /r/{code} redirects to target with its UTM parameters.
CREATE TABLE posting_links (
    code TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    target TEXT NOT NULL,
    campaign_id TEXT,
    post_id TEXT,
    product_id TEXT,
    variant TEXT,
    utm_source TEXT,
    utm_medium TEXT,
    utm_campaign TEXT,
    utm_content TEXT,
    created_ms BIGINT NOT NULL
);
CREATE INDEX posting_links_campaign ON posting_links (campaign_id);

-- A visit of a short link. Bots are kept (flagged) but never counted.
CREATE TABLE posting_clicks (
    id TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    referrer_host TEXT,
    agent TEXT NOT NULL,
    bot BIGINT NOT NULL
);
CREATE INDEX posting_clicks_code ON posting_clicks (code, at_ms);

-- What the platform says about a post, each time it is asked.
CREATE TABLE posting_metrics (
    external_id TEXT NOT NULL,
    post_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    impressions BIGINT NOT NULL,
    likes BIGINT NOT NULL,
    reposts BIGINT NOT NULL,
    replies BIGINT NOT NULL,
    quotes BIGINT NOT NULL,
    bookmarks BIGINT NOT NULL,
    url_clicks BIGINT,
    PRIMARY KEY (external_id, at_ms)
);
CREATE INDEX posting_metrics_account ON posting_metrics (account_id, at_ms);
