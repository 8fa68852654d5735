CREATE OR REPLACE FUNCTION swarm_drone_token_check(p_prefix text, p_digest text, p_now timestamptz)
RETURNS bigint LANGUAGE sql STABLE AS $$
    -- The drone token rule, the one SQL statement of it (swarm/core/authentication.py states it for Django's
    -- views: `drone_token_id`): a token of drone scope bound to a drone by a numeric subject id, neither revoked
    -- nor expired at `p_now`. The drone's id, or NULL. STABLE, so `drone.id = swarm_drone_token_check(...)` is
    -- evaluated once and stays an index hit.
    SELECT CASE WHEN t.subject_id ~ '^[0-9]{1,18}$' THEN CAST(t.subject_id AS bigint) END
    FROM core_apitoken t
    WHERE t.prefix = p_prefix AND t.digest = p_digest AND t.scope = 'drone' AND t.subject_type = 'drone'
      AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > p_now)
$$;
