-- Users provisioned over SCIM: the userName and externalId the provider
-- knows them by. userName is unique without regard to case (RFC 7643 §4.1.1).
CREATE TABLE scim_users (
    user_id        BLOB PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    user_name      TEXT NOT NULL,
    user_name_key  TEXT NOT NULL UNIQUE,
    external_id    TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX scim_users_by_external_id ON scim_users (external_id);
