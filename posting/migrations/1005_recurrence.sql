-- Recurring schedules beyond weekly slots: a cron expression, an end
-- (a date, or a number of posts), and campaigns that fill their own slots.
-- And the first try of a post's part.
ALTER TABLE posting_campaigns ADD COLUMN cron TEXT;
ALTER TABLE posting_campaigns ADD COLUMN ends_ms BIGINT;
ALTER TABLE posting_campaigns ADD COLUMN max_posts BIGINT;
ALTER TABLE posting_campaigns ADD COLUMN autofill BIGINT NOT NULL DEFAULT 0;
-- When the part being sent was first tried: an idempotency key lasts a
-- while from its first use, not from the latest.
ALTER TABLE posting_posts ADD COLUMN first_try_ms BIGINT;
