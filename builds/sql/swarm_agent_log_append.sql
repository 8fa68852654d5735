CREATE OR REPLACE FUNCTION swarm_agent_log_append(
    p_prefix text, p_digest text, p_now timestamptz, p_used_before timestamptz,
    p_lease_until timestamptz, p_renew_before timestamptz,
    p_build bigint, p_start bigint, p_data bytea, p_attempt integer, p_max_bytes bigint
) RETURNS TABLE (answer text, attempt_number integer, log_size bigint, build_state text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_drone bigint;
BEGIN
    -- `PATCH /api/v1/builds/<id>/log` in one round trip: touch the token, then the drone's log append.
    -- `view` (nothing written) when the token is no live drone token: Django's view answers 401/403.
    v_drone := swarm_agent_touch(p_prefix, p_digest, p_now, p_used_before, p_lease_until, p_renew_before);
    IF v_drone IS NULL THEN
        RETURN QUERY SELECT 'view'::text, NULL::integer, NULL::bigint, NULL::text;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM swarm_build_log_append(v_drone, p_build, p_start, p_data, p_attempt, p_max_bytes);
END
$$;
