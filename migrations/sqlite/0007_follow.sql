-- Changes to a role's own definition (its existence, parents, permissions),
-- by revision: with the user change log, what another memberd instance
-- sharing this database reloads to bring its index up to date.
CREATE TABLE role_change_log (
    revision  BIGINT NOT NULL,
    role_name TEXT NOT NULL,
    PRIMARY KEY (revision, role_name)
);
