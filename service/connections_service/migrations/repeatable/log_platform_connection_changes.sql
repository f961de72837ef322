-- The audit trigger's function, as it stands now: a repeatable migration, run again after the
-- numbered ones whenever this file changes, so the function has one home and every change to it
-- is a diff of this file. 001 created the function and 004 fixed its DELETE branch; those files
-- stay as they were applied, and this one holds the body both lead to. The trigger calls the
-- function by name, so replacing the function is all a change takes.

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
