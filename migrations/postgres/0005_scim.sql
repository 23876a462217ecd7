-- Users provisioned over SCIM: the userName and externalId the provider
-- knows them by. userName is unique without regard to case (RFC 7643 §4.1.1).
CREATE TABLE scim_users (
    user_id        UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    user_name      TEXT NOT NULL,
    user_name_key  TEXT NOT NULL UNIQUE,
    external_id    TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX scim_users_by_external_id ON scim_users (external_id);

-- Groups pushed over SCIM, and who is in them. A group linked to a role
-- (role_name) makes its members hold that role everywhere.
CREATE TABLE scim_groups (
    id                UUID PRIMARY KEY,
    display_name      TEXT NOT NULL,
    display_name_key  TEXT NOT NULL UNIQUE,
    external_id       TEXT,
    role_name         TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);

CREATE TABLE scim_group_members (
    group_id UUID NOT NULL REFERENCES scim_groups (id) ON DELETE CASCADE,
    user_id  UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
