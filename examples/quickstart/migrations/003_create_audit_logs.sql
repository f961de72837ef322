-- The audit log keeps a deleted connection's id in resource_id, so platform_connection_id can be
-- NULL after a DELETE instead of pointing at a row that no longer exists.
-- migrate:up
CREATE TABLE audit_logs (
    id INTEGER PRIMARY KEY,
    organization_id VARCHAR(255),
    platform_connection_id VARCHAR(255) REFERENCES platform_connections (id) ON DELETE SET NULL,
    event_type VARCHAR(100) NOT NULL,
    resource_id VARCHAR(255),
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX audit_logs_resource_id ON audit_logs (resource_id);

-- migrate:down
DROP TABLE audit_logs;
