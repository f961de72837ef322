"""The incident's data for the benchmarks that need a production-sized database: organizations,
their platform connections and one audit row per connection, generated on the server. Run with
``%(orgs)s`` and ``%(rows)s`` as psycopg parameters, on the schema the service's 001 and 002 make."""

FILL = """
ALTER TABLE platform_connections DISABLE TRIGGER platform_connection_audit_trigger;
INSERT INTO organizations (name) SELECT 'Organization ' || g FROM generate_series(1, %(orgs)s) g;
INSERT INTO platform_connections (organization_id, platform_type, platform_user_id, display_name, status)
SELECT o.a[1 + g %% array_length(o.a, 1)], 'google', 'google-' || (1759721169098 + g),
       'Connection ' || g, 'active'
FROM generate_series(1, %(rows)s) g, (SELECT array_agg(id) AS a FROM organizations) o;
INSERT INTO audit_logs (organization_id, platform_connection_id, event_type, resource_type, resource_id,
                        event_data)
SELECT organization_id, id, 'platform_connection_created', 'platform_connection', id::text,
       jsonb_build_object('platform_connection_id', id, 'platform_type', platform_type,
                          'display_name', display_name, 'status', status)
FROM platform_connections;
ALTER TABLE platform_connections ENABLE TRIGGER platform_connection_audit_trigger;
"""
