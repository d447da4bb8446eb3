-- Speech requests are billed by audio duration: seconds of audio per record
-- (0 for text requests).
ALTER TABLE usage_records ADD COLUMN audio_seconds DOUBLE PRECISION NOT NULL DEFAULT 0;
