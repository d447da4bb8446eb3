-- Media attached to posts: the bytes as uploaded to us (base64), and what
-- each account's platform calls them once uploaded there (X's media ids
-- expire: re-uploaded after).
CREATE TABLE posting_media (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    bytes TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE posting_media_uploads (
    media_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    expires_ms BIGINT,
    PRIMARY KEY (media_id, account_id)
);
