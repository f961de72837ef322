-- 004, the secondary fix: with the types right (003), DELETE still failed, now on the audit
-- trigger. Its DELETE branch pointed the new audit row at the connection being deleted, and the
-- row's foreign key said 'Key (platform_connection_id)=(...) is not present in table
-- "platform_connections"'. The function is replaced: DELETE audit rows carry a NULL
-- platform_connection_id and keep the deleted id in resource_id and
-- event_data->>'platform_connection_id'. The trigger itself is unchanged: it calls the function by
-- name.

-- migrate:up
CREATE OR REPLACE FUNCTION log_platform_connection_changes() RETURNS TRIGGER
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
        -- The connection is gone when this AFTER trigger runs, so the audit row cannot reference
        -- it: platform_connection_id is NULL, and the id lives on in resource_id and event_data.
        INSERT INTO audit_logs (
            organization_id, platform_connection_id, event_type, resource_type, resource_id,
            event_data
        ) VALUES (
            OLD.organization_id, NULL, 'platform_connection_deleted', 'platform_connection',
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

-- migrate:down
-- Back to 001's function, bug included: a rollback restores what was, not what should be.
CREATE OR REPLACE FUNCTION log_platform_connection_changes() RETURNS TRIGGER
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
        -- 001's bug, restored on purpose by this rollback: OLD.id is already gone from
        -- platform_connections, so the audit row's foreign key rejects it and the DELETE fails.
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
