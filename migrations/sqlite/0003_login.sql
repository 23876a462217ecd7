-- memberd's own login: local accounts, second factors, throttling, signing
-- keys and sessions. Moments that SQL compares (expiries of captchas and
-- challenges, lockouts) are unix seconds in INTEGER columns, so that the
-- comparison is the same number on both backends.

CREATE TABLE local_accounts (
    user_id               BLOB PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    username              TEXT NOT NULL UNIQUE,
    password_hash         TEXT NOT NULL,
    must_change_password  BOOLEAN NOT NULL DEFAULT FALSE,
    -- Sealed with the key-encryption key, like the signing keys.
    totp_secret           TEXT,
    totp_pending_secret   TEXT,
    -- The last time step whose code was accepted: a code is good once.
    totp_last_step        BIGINT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
);

CREATE TABLE recovery_codes (
    user_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest  TEXT NOT NULL,
    used_at TEXT,
    PRIMARY KEY (user_id, digest)
);

-- Failed logins per username and per client address.
CREATE TABLE login_throttle (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL DEFAULT 0,
    window_start BIGINT NOT NULL DEFAULT 0,
    lockouts     INTEGER NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE captchas (
    id            TEXT PRIMARY KEY,
    answer_digest TEXT NOT NULL,
    expires_at    BIGINT NOT NULL
);

-- A password was right and a second factor is due.
CREATE TABLE mfa_challenges (
    digest     TEXT PRIMARY KEY,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    public_key  BLOB NOT NULL,
    private_key TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    retired_at  TEXT
);

CREATE TABLE sessions (
    id                  BLOB PRIMARY KEY,
    user_id             BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at          TEXT NOT NULL,
    last_used_at        TEXT NOT NULL,
    expires_at          TEXT NOT NULL,
    absolute_expires_at TEXT NOT NULL,
    ip                  TEXT,
    user_agent          TEXT,
    revoked_at          TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    digest     TEXT PRIMARY KEY,
    session_id BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
