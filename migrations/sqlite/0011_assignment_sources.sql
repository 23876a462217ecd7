-- Where a role assignment comes from: an administrator (the API, the
-- console, the CLI) or membership of a SCIM group linked to the role. The
-- assignment lasts while either source holds it, so a SCIM removal never
-- takes a role an administrator gave. Rows made before this are kept as an
-- administrator's: removing them takes an administrator.
ALTER TABLE role_assignments ADD COLUMN held_by_admin BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE role_assignments ADD COLUMN held_by_scim BOOLEAN NOT NULL DEFAULT FALSE;

-- The SCIM client that provisioned the user: only it may change the user
-- over SCIM. NULL for users provisioned before ownership; the first SCIM
-- client to touch such a user adopts it (never an operator).
ALTER TABLE scim_users ADD COLUMN client_key TEXT;
