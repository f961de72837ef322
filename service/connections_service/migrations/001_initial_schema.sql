-- 001, the story's beginning: the schema as first written, before the application moved to Clerk.
-- Every key is a UUID, and the audit trigger's DELETE branch is the incident's secondary bug: it
-- points the new audit row at the connection that is being deleted, so the audit row's foreign key
-- fails ('Key (platform_connection_id)=(...) is not present in table "platform_connections"') and
-- every DELETE of a connection fails with it. Migration 003 fixes the types, 004 the trigger.
-- The foreign keys below carry no deliberate ON DELETE rule yet (003 gives each one), except the
-- audit reference, which already said SET NULL and was still not enough.

-- migrate:up
CREATE TABLE organizations (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name VARCHAR(255) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE platform_connections (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL REFERENCES organizations (id),
    platform_type VARCHAR(50) NOT NULL,
    platform_user_id VARCHAR(255) NOT NULL,
    display_name VARCHAR(255) NOT NULL,
    status VARCHAR(50) NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'inactive', 'error', 'expired', 'pending')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX platform_connections_organization_id_idx ON platform_connections (organization_id);

-- organization_id has no foreign key on purpose: an audit trail outlives what it describes.
CREATE TABLE audit_logs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID,
    platform_connection_id UUID REFERENCES platform_connections (id) ON DELETE SET NULL,
    event_type VARCHAR(100) NOT NULL,
    resource_type VARCHAR(100) NOT NULL,
    resource_id VARCHAR(255),
    event_data JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX audit_logs_resource_id_idx ON audit_logs (resource_id);

CREATE FUNCTION log_platform_connection_changes() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_logs (
            organization_id, platform_connection_id, event_type, resource_type, resource_id,
            event_data
        ) VALUES (
            NEW.organization_id, NEW.id, 'platform_connection_created', 'platform_connection',
            NEW.id::text,
            jsonb_build_object(
                'platform_connection_id', NEW.id,
                'platform_type', NEW.platform_type,
                'platform_user_id', NEW.platform_user_id,
                'display_name', NEW.display_name,
                'status', NEW.status
            )
        );
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO audit_logs (
            organization_id, platform_connection_id, event_type, resource_type, resource_id,
            event_data
        ) VALUES (
            NEW.organization_id, NEW.id, 'platform_connection_updated', 'platform_connection',
            NEW.id::text,
            jsonb_build_object(
                'platform_connection_id', NEW.id,
                'platform_type', NEW.platform_type,
                'old_status', OLD.status,
                'new_status', NEW.status,
                'display_name', NEW.display_name
            )
        );
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        -- The incident's bug: OLD.id no longer exists in platform_connections when this AFTER
        -- trigger runs, so the audit row's foreign key rejects it and the DELETE fails.
        INSERT INTO audit_logs (
            organization_id, platform_connection_id, event_type, resource_type, resource_id,
            event_data
        ) VALUES (
            OLD.organization_id, OLD.id, 'platform_connection_deleted', 'platform_connection',
            OLD.id::text,
            jsonb_build_object(
                'platform_connection_id', OLD.id,
                'platform_type', OLD.platform_type,
                'platform_user_id', OLD.platform_user_id,
                'display_name', OLD.display_name
            )
        );
        RETURN OLD;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER platform_connection_audit_trigger
    AFTER INSERT OR UPDATE OR DELETE ON platform_connections
    FOR EACH ROW EXECUTE FUNCTION log_platform_connection_changes();

-- migrate:down
DROP TRIGGER platform_connection_audit_trigger ON platform_connections;
DROP FUNCTION log_platform_connection_changes();
DROP TABLE audit_logs;
DROP TABLE platform_connections;
DROP TABLE organizations;
