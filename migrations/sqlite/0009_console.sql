-- The console's own pages, as rules like any back office's: the console
-- builds its navigation from /me/menus, so an operator sees only the pages
-- their roles reveal (module memberd, action = the page). The built-in
-- admin role holds memberd/* and sees them all.
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES (X'd8d19a288b4c53e0ad861268c8a0ace7', 'memberd', 'directory', NULL, 'memberd', '/console', 1000, FALSE, 'memberd', 'console', '2026-11-24 00:00:00.0+00:00', '2026-11-24 00:00:00.0+00:00');
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES (X'823c96bd5e215e5b9669a223c6be5802', 'memberd:users', 'menu', X'd8d19a288b4c53e0ad861268c8a0ace7', 'Users', '/console#/users', 1, FALSE, 'memberd', 'users', '2026-11-24 00:00:00.0+00:00', '2026-11-24 00:00:00.0+00:00');
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES (X'c7e4e194cf81552981769d0f2c5a139a', 'memberd:roles', 'menu', X'd8d19a288b4c53e0ad861268c8a0ace7', 'Roles', '/console#/roles', 2, FALSE, 'memberd', 'roles', '2026-11-24 00:00:00.0+00:00', '2026-11-24 00:00:00.0+00:00');
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES (X'017de67e3acf5ef4bcf190b091990998', 'memberd:menus', 'menu', X'd8d19a288b4c53e0ad861268c8a0ace7', 'Menus', '/console#/menus', 3, FALSE, 'memberd', 'menus', '2026-11-24 00:00:00.0+00:00', '2026-11-24 00:00:00.0+00:00');
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES (X'7378fc2703cc5c0b8102ce0635ab5a55', 'memberd:clients', 'menu', X'd8d19a288b4c53e0ad861268c8a0ace7', 'API clients', '/console#/clients', 4, FALSE, 'memberd', 'clients', '2026-11-24 00:00:00.0+00:00', '2026-11-24 00:00:00.0+00:00');
INSERT INTO rules (id, name, kind, parent_id, title, path, weight, hidden, module, action, created_at, updated_at)
    VALUES (X'd341bfd704d757e6a9f7b3f892c9b597', 'memberd:audit', 'menu', X'd8d19a288b4c53e0ad861268c8a0ace7', 'Audit log', '/console#/audit', 5, FALSE, 'memberd', 'audit', '2026-11-24 00:00:00.0+00:00', '2026-11-24 00:00:00.0+00:00');
