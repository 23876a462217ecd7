-- Roles, their hierarchy, permissions and assignments; deny grants; and the
-- change log that tells caches which users' permissions changed since a revision.

ALTER TABLE permissions ADD COLUMN effect TEXT NOT NULL DEFAULT 'allow' CHECK (effect IN ('allow', 'deny'));

CREATE TABLE roles (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- role_id inherits every permission of parent_id.
CREATE TABLE role_parents (
    role_id   BLOB NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    parent_id BLOB NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (role_id, parent_id)
);

-- An empty scope_type and scope_id: the permission applies wherever the role is held.
CREATE TABLE role_permissions (
    id         BLOB PRIMARY KEY,
    role_id    BLOB NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    module     TEXT NOT NULL,
    action     TEXT NOT NULL,
    scope_type TEXT NOT NULL DEFAULT '',
    scope_id   TEXT NOT NULL DEFAULT '',
    effect     TEXT NOT NULL DEFAULT 'allow' CHECK (effect IN ('allow', 'deny')),
    created_at TEXT NOT NULL,
    UNIQUE (role_id, module, action, scope_type, scope_id)
);

CREATE TABLE role_assignments (
    id         BLOB PRIMARY KEY,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id    BLOB NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    scope_type TEXT NOT NULL,
    scope_id   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (user_id, role_id, scope_type, scope_id)
);
CREATE INDEX role_assignments_by_role ON role_assignments (role_id);

CREATE TABLE change_log (
    revision INTEGER NOT NULL,
    user_id  BLOB NOT NULL,
    PRIMARY KEY (revision, user_id)
);

-- Changes before this migration were not logged: asking for them answers 410.
INSERT INTO settings (key, value) SELECT 'change_log_floor', CAST(value AS TEXT) FROM revision WHERE id = 1;
