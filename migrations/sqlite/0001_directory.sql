-- The directory: users, their direct grants, API clients, and the revision
-- counter that every change to users or grants bumps in its own transaction.

CREATE TABLE revision (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);

CREATE TABLE users (
    id            BLOB PRIMARY KEY,
    authentik_sub TEXT NOT NULL UNIQUE,
    email         TEXT,
    display_name  TEXT,
    is_active     BOOLEAN NOT NULL DEFAULT TRUE,
    revision      INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE permissions (
    id         BLOB PRIMARY KEY,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope_type TEXT NOT NULL,
    scope_id   TEXT NOT NULL,
    module     TEXT NOT NULL,
    action     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (user_id, scope_type, scope_id, module, action)
);

CREATE TABLE api_clients (
    client_key            TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    api_key_hash          TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    expires_at            TEXT,
    allowed_origins       TEXT NOT NULL DEFAULT '[]',
    allowed_ips           TEXT NOT NULL DEFAULT '[]',
    allowed_paths         TEXT NOT NULL DEFAULT '[]',
    rate_limit_per_minute INTEGER CHECK (rate_limit_per_minute > 0),
    created_at            TEXT NOT NULL,
    last_used_at          TEXT
);

-- Values memberd generates for itself (such as the development internal
-- secret's digest), kept so that restarts reuse them.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
