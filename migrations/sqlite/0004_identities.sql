-- Who a user is at each identity provider: (issuer, subject) pairs. The
-- user's authentik_sub stays its public key; a second provider, or a
-- provider that changed its subject mode, links here without orphaning grants.
CREATE TABLE identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX identities_by_user ON identities (user_id);
