-- The back office's rule tree (directories, menus, buttons), each revealed
-- by one permission; roles bound to rules hold those permissions.

CREATE TABLE rules (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('directory', 'menu', 'button')),
    parent_id  BLOB REFERENCES rules (id) ON DELETE CASCADE,
    title      TEXT NOT NULL,
    path       TEXT,
    component  TEXT,
    icon       TEXT,
    weight     INTEGER NOT NULL DEFAULT 0,
    hidden     BOOLEAN NOT NULL DEFAULT FALSE,
    module     TEXT NOT NULL,
    action     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX rules_by_parent ON rules (parent_id);

CREATE TABLE role_rules (
    role_id BLOB NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    rule_id BLOB NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    PRIMARY KEY (role_id, rule_id)
);
CREATE INDEX role_rules_by_rule ON role_rules (rule_id);

-- A role permission that exists because the role is bound to a rule; it
-- goes when the last such rule is unbound. One set explicitly is kept.
ALTER TABLE role_permissions ADD COLUMN from_rules BOOLEAN NOT NULL DEFAULT FALSE;

-- The permission catalog: the modules and actions the organisation declares.
CREATE TABLE catalog_modules (
    module      TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE catalog_actions (
    module TEXT NOT NULL REFERENCES catalog_modules (module) ON DELETE CASCADE,
    action TEXT NOT NULL,
    PRIMARY KEY (module, action)
);
