CREATE OR REPLACE FUNCTION swarm_agent_touch(
    p_prefix text, p_digest text, p_now timestamptz, p_used_before timestamptz,
    p_lease_until timestamptz, p_renew_before timestamptz
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_drone bigint;
BEGIN
    -- The drone token's check as the bearer authentication makes it (touching `last_used_at` at most
    -- once a minute); NULL for a token that is not a live drone token, and then nothing is written.
    WITH token AS (
        SELECT t.id AS token_id,
               CASE WHEN t.subject_id ~ '^[0-9]{1,18}$' THEN CAST(t.subject_id AS bigint) END AS drone_id
        FROM core_apitoken t
        WHERE t.prefix = p_prefix AND t.digest = p_digest AND t.scope = 'drone' AND t.subject_type = 'drone'
          AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > p_now)
    ), used AS (
        UPDATE core_apitoken SET last_used_at = p_now
        WHERE id = (SELECT token_id FROM token) AND (last_used_at IS NULL OR last_used_at < p_used_before)
    )
    SELECT token.drone_id INTO v_drone FROM token;
    IF v_drone IS NOT NULL THEN
        PERFORM swarm_drone_leases_renew(v_drone, p_lease_until, p_renew_before);
    END IF;
    RETURN v_drone;
END
$$;
