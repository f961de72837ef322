-- 002, the story goes on: the discovery feature (which applications each connection can see) is
-- added on top of the UUID schema, so it inherits UUID keys and more foreign keys to convert.
-- Databases of the time were built by running 001 and 002 by hand with psql: no ledger recorded
-- them, which is how 003 came to be written but never applied.

-- migrate:up
CREATE TABLE discovery_runs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL REFERENCES organizations (id),
    platform_connection_id UUID NOT NULL REFERENCES platform_connections (id),
    status VARCHAR(50) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    apps_found INTEGER NOT NULL DEFAULT 0,
    error_message TEXT,
    started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    completed_at TIMESTAMPTZ
);
CREATE INDEX discovery_runs_platform_connection_id_idx ON discovery_runs (platform_connection_id);

CREATE TABLE discovered_apps (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL REFERENCES organizations (id),
    platform_connection_id UUID NOT NULL REFERENCES platform_connections (id),
    discovery_run_id UUID REFERENCES discovery_runs (id),
    external_id VARCHAR(255) NOT NULL,
    name VARCHAR(255) NOT NULL,
    app_type VARCHAR(50) NOT NULL,
    risk_level VARCHAR(20) NOT NULL DEFAULT 'unknown',
    metadata JSONB NOT NULL DEFAULT '{}',
    first_seen_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (platform_connection_id, external_id)
);
CREATE INDEX discovered_apps_organization_id_idx ON discovered_apps (organization_id);

-- migrate:down
DROP TABLE discovered_apps;
DROP TABLE discovery_runs;
