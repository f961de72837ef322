-- migrate:up
CREATE TABLE platform_connections (
    id VARCHAR(255) PRIMARY KEY,              -- e.g. google-1759721169098
    organization_id VARCHAR(255) NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    platform_type VARCHAR(50) NOT NULL,
    display_name TEXT NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'active',
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX platform_connections_organization_id ON platform_connections (organization_id);

-- migrate:down
DROP TABLE platform_connections;
