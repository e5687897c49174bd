-- depends: 0001.items
-- Connection utilisation for the health endpoint, without giving the application role the right
-- to read other sessions' activity: only these counts leave the function. It runs with its
-- owner's rights (the migration role, a member of pg_read_all_stats).
CREATE FUNCTION connection_utilisation(
    OUT total integer,
    OUT active integer,
    OUT idle integer,
    OUT idle_in_transaction integer,
    OUT max_connections integer
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
    SELECT count(*)::integer,
           (count(*) FILTER (WHERE state = 'active'))::integer,
           (count(*) FILTER (WHERE state = 'idle'))::integer,
           (count(*) FILTER (WHERE state LIKE 'idle in transaction%'))::integer,
           current_setting('max_connections')::integer
    FROM pg_stat_activity
    WHERE backend_type = 'client backend'
$$;
