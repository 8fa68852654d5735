CREATE OR REPLACE FUNCTION swarm_agent_touch(
    p_prefix text, p_digest text, p_now timestamptz, p_used_before timestamptz,
    p_lease_until timestamptz, p_renew_before timestamptz
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_drone bigint;
BEGIN
    -- The drone token's check (`swarm_drone_token_check`, as the bearer authentication makes it), touching
    -- `last_used_at` at most once a minute; NULL for a token that is not a live drone token, and then nothing
    -- is written.
    v_drone := swarm_drone_token_check(p_prefix, p_digest, p_now);
    IF v_drone IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE core_apitoken SET last_used_at = p_now
    WHERE prefix = p_prefix AND digest = p_digest AND (last_used_at IS NULL OR last_used_at < p_used_before);
    PERFORM swarm_drone_leases_renew(v_drone, p_lease_until, p_renew_before);
    RETURN v_drone;
END
$$;
