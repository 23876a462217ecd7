-- What each API client may do (a JSON list: check, read, users:write,
-- grants:write, roles:write, scim, admin). Clients made before capabilities
-- could call every admin route, so they keep that as "admin"; clients
-- created from now on get "check" unless their creator names more.
ALTER TABLE api_clients ADD COLUMN capabilities TEXT NOT NULL DEFAULT '["admin"]';
