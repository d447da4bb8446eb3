-- Voice commands (versions 2001..3000 are voice's). Every command is kept:
-- what was heard, how it was read, what was done. `record` is the answer as
-- JSON; `plan` the action a confirmation carries out; `token_hash` the
-- SHA-256 of its single-use confirmation token. `owner` is the API key id
-- ('' when keys are not in use): every read filters on it.
CREATE TABLE voice_commands (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    -- done | needs_confirmation | confirming | failed | refused | expired
    status TEXT NOT NULL,
    intent TEXT NOT NULL,
    record TEXT NOT NULL,
    plan TEXT,
    token_hash TEXT,
    token_expires_ms BIGINT,
    -- The audio, base64, only where [voice] keep_audio says so.
    audio TEXT,
    audio_name TEXT
);
CREATE INDEX voice_commands_owner ON voice_commands (owner, created_ms);
CREATE UNIQUE INDEX voice_commands_token ON voice_commands (token_hash);
