-- Changes to a role's own definition (its existence, parents, permissions),
-- by revision: with the user change log, what another memberd instance
-- sharing this database reloads to bring its index up to date.
CREATE TABLE role_change_log (
    revision  BIGINT NOT NULL,
    role_name TEXT NOT NULL,
    PRIMARY KEY (revision, role_name)
);

-- Every committed change to the policy moves the revision; other instances
-- LISTEN on this channel to catch up at once rather than at their next poll.
-- NOTIFY inside the writer's transaction is delivered only if it commits.
CREATE FUNCTION memberd_notify_revision() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('memberd_revision', NEW.value::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER revision_moved AFTER UPDATE ON revision
    FOR EACH ROW EXECUTE FUNCTION memberd_notify_revision();
