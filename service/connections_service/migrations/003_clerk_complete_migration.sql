-- 003, the fix that was written on Oct 4 (as clerk-final-complete-migration.sql) and never
-- applied: the application had moved to Clerk's string ids (org_33fSYwlyUqkYiSD2kBt7hqBz7dE,
-- google-1759721169098), the columns still said UUID, and every lookup by such an id failed with
-- 'invalid input syntax for type uuid'. Every id, organization_id and platform_connection_id
-- column (and discovery_run_id, which references an id) becomes VARCHAR(255).
--
-- Order matters: a foreign key ties the types of both its columns, and a UUID default cannot be
-- cast to text, so the keys and defaults go first, the types change, then everything comes back,
-- each foreign key with an ON DELETE rule chosen on purpose. The whole file runs in one
-- transaction: on failure nothing is half-converted.

-- migrate:up
ALTER TABLE platform_connections DROP CONSTRAINT platform_connections_organization_id_fkey;
ALTER TABLE audit_logs DROP CONSTRAINT audit_logs_platform_connection_id_fkey;
ALTER TABLE discovery_runs
    DROP CONSTRAINT discovery_runs_organization_id_fkey,
    DROP CONSTRAINT discovery_runs_platform_connection_id_fkey;
ALTER TABLE discovered_apps
    DROP CONSTRAINT discovered_apps_organization_id_fkey,
    DROP CONSTRAINT discovered_apps_platform_connection_id_fkey,
    DROP CONSTRAINT discovered_apps_discovery_run_id_fkey;

ALTER TABLE organizations ALTER COLUMN id DROP DEFAULT;
ALTER TABLE platform_connections ALTER COLUMN id DROP DEFAULT;
ALTER TABLE audit_logs ALTER COLUMN id DROP DEFAULT;
ALTER TABLE discovery_runs ALTER COLUMN id DROP DEFAULT;
ALTER TABLE discovered_apps ALTER COLUMN id DROP DEFAULT;

ALTER TABLE organizations
    ALTER COLUMN id TYPE VARCHAR(255) USING id::text;
ALTER TABLE platform_connections
    ALTER COLUMN id TYPE VARCHAR(255) USING id::text,
    ALTER COLUMN organization_id TYPE VARCHAR(255) USING organization_id::text;
ALTER TABLE audit_logs
    ALTER COLUMN id TYPE VARCHAR(255) USING id::text,
    ALTER COLUMN organization_id TYPE VARCHAR(255) USING organization_id::text,
    ALTER COLUMN platform_connection_id TYPE VARCHAR(255) USING platform_connection_id::text;
ALTER TABLE discovery_runs
    ALTER COLUMN id TYPE VARCHAR(255) USING id::text,
    ALTER COLUMN organization_id TYPE VARCHAR(255) USING organization_id::text,
    ALTER COLUMN platform_connection_id TYPE VARCHAR(255) USING platform_connection_id::text;
ALTER TABLE discovered_apps
    ALTER COLUMN id TYPE VARCHAR(255) USING id::text,
    ALTER COLUMN organization_id TYPE VARCHAR(255) USING organization_id::text,
    ALTER COLUMN platform_connection_id TYPE VARCHAR(255) USING platform_connection_id::text,
    ALTER COLUMN discovery_run_id TYPE VARCHAR(255) USING discovery_run_id::text;

-- Rows the database creates itself (the audit trigger's rows, discovery results) still get a
-- generated id. Organizations and connections get none: their ids come from the identity
-- provider, and an INSERT without one must fail rather than invent a UUID nobody knows.
ALTER TABLE audit_logs ALTER COLUMN id SET DEFAULT gen_random_uuid()::text;
ALTER TABLE discovery_runs ALTER COLUMN id SET DEFAULT gen_random_uuid()::text;
ALTER TABLE discovered_apps ALTER COLUMN id SET DEFAULT gen_random_uuid()::text;

-- An organization owns its connections: deleting it deletes them (and each deletion is audited).
ALTER TABLE platform_connections
    ADD CONSTRAINT platform_connections_organization_id_fkey
    FOREIGN KEY (organization_id) REFERENCES organizations (id) ON DELETE CASCADE;
-- An audit row is a reference, not a belonging: it outlives the connection, whose id stays in
-- resource_id and event_data.
ALTER TABLE audit_logs
    ADD CONSTRAINT audit_logs_platform_connection_id_fkey
    FOREIGN KEY (platform_connection_id) REFERENCES platform_connections (id) ON DELETE SET NULL;
-- Discovery results belong to the organization and the connection that produced them: they go
-- with either.
ALTER TABLE discovery_runs
    ADD CONSTRAINT discovery_runs_organization_id_fkey
    FOREIGN KEY (organization_id) REFERENCES organizations (id) ON DELETE CASCADE,
    ADD CONSTRAINT discovery_runs_platform_connection_id_fkey
    FOREIGN KEY (platform_connection_id) REFERENCES platform_connections (id) ON DELETE CASCADE;
ALTER TABLE discovered_apps
    ADD CONSTRAINT discovered_apps_organization_id_fkey
    FOREIGN KEY (organization_id) REFERENCES organizations (id) ON DELETE CASCADE,
    ADD CONSTRAINT discovered_apps_platform_connection_id_fkey
    FOREIGN KEY (platform_connection_id) REFERENCES platform_connections (id) ON DELETE CASCADE,
    -- Which run found an app is provenance, a reference: the app stays when old runs are pruned.
    ADD CONSTRAINT discovered_apps_discovery_run_id_fkey
    FOREIGN KEY (discovery_run_id) REFERENCES discovery_runs (id) ON DELETE SET NULL;

-- migrate:down
-- Back to UUID. This works only while every value is a valid UUID: once a Clerk id such as
-- 'org_33fSYwlyUqkYiSD2kBt7hqBz7dE' is stored, the casts fail with 'invalid input syntax for type
-- uuid' and the rollback changes nothing (it runs in one transaction). Delete or map those rows
-- first. The foreign keys return to 001's and 002's, without the ON DELETE rules above.
ALTER TABLE platform_connections DROP CONSTRAINT platform_connections_organization_id_fkey;
ALTER TABLE audit_logs DROP CONSTRAINT audit_logs_platform_connection_id_fkey;
ALTER TABLE discovery_runs
    DROP CONSTRAINT discovery_runs_organization_id_fkey,
    DROP CONSTRAINT discovery_runs_platform_connection_id_fkey;
ALTER TABLE discovered_apps
    DROP CONSTRAINT discovered_apps_organization_id_fkey,
    DROP CONSTRAINT discovered_apps_platform_connection_id_fkey,
    DROP CONSTRAINT discovered_apps_discovery_run_id_fkey;

ALTER TABLE audit_logs ALTER COLUMN id DROP DEFAULT;
ALTER TABLE discovery_runs ALTER COLUMN id DROP DEFAULT;
ALTER TABLE discovered_apps ALTER COLUMN id DROP DEFAULT;

ALTER TABLE organizations
    ALTER COLUMN id TYPE UUID USING id::uuid;
ALTER TABLE platform_connections
    ALTER COLUMN id TYPE UUID USING id::uuid,
    ALTER COLUMN organization_id TYPE UUID USING organization_id::uuid;
ALTER TABLE audit_logs
    ALTER COLUMN id TYPE UUID USING id::uuid,
    ALTER COLUMN organization_id TYPE UUID USING organization_id::uuid,
    ALTER COLUMN platform_connection_id TYPE UUID USING platform_connection_id::uuid;
ALTER TABLE discovery_runs
    ALTER COLUMN id TYPE UUID USING id::uuid,
    ALTER COLUMN organization_id TYPE UUID USING organization_id::uuid,
    ALTER COLUMN platform_connection_id TYPE UUID USING platform_connection_id::uuid;
ALTER TABLE discovered_apps
    ALTER COLUMN id TYPE UUID USING id::uuid,
    ALTER COLUMN organization_id TYPE UUID USING organization_id::uuid,
    ALTER COLUMN platform_connection_id TYPE UUID USING platform_connection_id::uuid,
    ALTER COLUMN discovery_run_id TYPE UUID USING discovery_run_id::uuid;

ALTER TABLE organizations ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE platform_connections ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE audit_logs ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE discovery_runs ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE discovered_apps ALTER COLUMN id SET DEFAULT gen_random_uuid();

ALTER TABLE platform_connections
    ADD CONSTRAINT platform_connections_organization_id_fkey
    FOREIGN KEY (organization_id) REFERENCES organizations (id);
ALTER TABLE audit_logs
    ADD CONSTRAINT audit_logs_platform_connection_id_fkey
    FOREIGN KEY (platform_connection_id) REFERENCES platform_connections (id) ON DELETE SET NULL;
ALTER TABLE discovery_runs
    ADD CONSTRAINT discovery_runs_organization_id_fkey
    FOREIGN KEY (organization_id) REFERENCES organizations (id),
    ADD CONSTRAINT discovery_runs_platform_connection_id_fkey
    FOREIGN KEY (platform_connection_id) REFERENCES platform_connections (id);
ALTER TABLE discovered_apps
    ADD CONSTRAINT discovered_apps_organization_id_fkey
    FOREIGN KEY (organization_id) REFERENCES organizations (id),
    ADD CONSTRAINT discovered_apps_platform_connection_id_fkey
    FOREIGN KEY (platform_connection_id) REFERENCES platform_connections (id),
    ADD CONSTRAINT discovered_apps_discovery_run_id_fkey
    FOREIGN KEY (discovery_run_id) REFERENCES discovery_runs (id);
