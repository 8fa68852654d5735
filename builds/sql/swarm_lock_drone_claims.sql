CREATE OR REPLACE FUNCTION swarm_lock_drone_claims(p_drone bigint) RETURNS void LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('swarm:drone-claims:' || p_drone, 0));
$$;
