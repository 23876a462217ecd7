-- The console's own pages, as rules like any back office's: the console
-- builds its navigation from /me/menus, so an operator sees only the pages
-- their roles reveal (module memberd, action = the page). The built-in
-- admin role holds memberd/* and sees them all.
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES ('d8d19a28-8b4c-53e0-ad86-1268c8a0ace7', 'memberd', 'directory', NULL, 'memberd', '/console', 1000, FALSE, 'memberd', 'console', '2026-11-24 00:00:00+00', '2026-11-24 00:00:00+00');
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES ('823c96bd-5e21-5e5b-9669-a223c6be5802', 'memberd:users', 'menu', 'd8d19a28-8b4c-53e0-ad86-1268c8a0ace7', 'Users', '/console#/users', 1, FALSE, 'memberd', 'users', '2026-11-24 00:00:00+00', '2026-11-24 00:00:00+00');
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES ('c7e4e194-cf81-5529-8176-9d0f2c5a139a', 'memberd:roles', 'menu', 'd8d19a28-8b4c-53e0-ad86-1268c8a0ace7', 'Roles', '/console#/roles', 2, FALSE, 'memberd', 'roles', '2026-11-24 00:00:00+00', '2026-11-24 00:00:00+00');
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES ('017de67e-3acf-5ef4-bcf1-90b091990998', 'memberd:menus', 'menu', 'd8d19a28-8b4c-53e0-ad86-1268c8a0ace7', 'Menus', '/console#/menus', 3, FALSE, 'memberd', 'menus', '2026-11-24 00:00:00+00', '2026-11-24 00:00:00+00');
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES ('7378fc27-03cc-5c0b-8102-ce0635ab5a55', 'memberd:clients', 'menu', 'd8d19a28-8b4c-53e0-ad86-1268c8a0ace7', 'API clients', '/console#/clients', 4, FALSE, 'memberd', 'clients', '2026-11-24 00:00:00+00', '2026-11-24 00:00:00+00');
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES ('d341bfd7-04d7-57e6-a9f7-b3f892c9b597', 'memberd:audit', 'menu', 'd8d19a28-8b4c-53e0-ad86-1268c8a0ace7', 'Audit log', '/console#/audit', 5, FALSE, 'memberd', 'audit', '2026-11-24 00:00:00+00', '2026-11-24 00:00:00+00');
