-- Organizations are keyed by the identity provider's string ids (Clerk style:
-- org_33fSYwlyUqkYiSD2kBt7hqBz7dE), never by UUIDs: the incident dbledger was born from.
-- migrate:up
CREATE TABLE organizations (
    id VARCHAR(255) PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- migrate:down
DROP TABLE organizations;
