CREATE OR REPLACE FUNCTION swarm_build_log_append(
    p_drone bigint, p_build bigint, p_start bigint, p_data bytea, p_attempt integer, p_max_bytes bigint
) RETURNS TABLE (answer text, attempt_number integer, log_size bigint, build_state text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_build record;
    v_attempt record;
BEGIN
    -- A drone's log append, the same for `build_log_append` (Django's view) and `swarm_agent_log_append`
    -- (the event loop). `answer`: `appended` or `empty` (with the attempt and the log's size), or a
    -- refusal builds/services/logs.py turns into the API's error: `not_held` (404), `superseded` (409,
    -- with the current attempt), `archived` (409), `range` (416, with the stored size), `too_large` (413).
    -- `build_state` is the build's state whenever the build exists (the answer's Job-Status).
    SELECT b.id, b.drone_id, b.attempt_count, b.state INTO v_build FROM builds_build b WHERE b.id = p_build;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_held'::text, NULL::integer, NULL::bigint, NULL::text;
        RETURN;
    END IF;
    IF v_build.drone_id IS DISTINCT FROM p_drone THEN
        RETURN QUERY SELECT 'not_held'::text, NULL::integer, NULL::bigint, v_build.state::text;
        RETURN;
    END IF;
    IF p_attempt IS NOT NULL AND p_attempt <> v_build.attempt_count THEN
        RETURN QUERY SELECT 'superseded'::text, v_build.attempt_count::integer, NULL::bigint, v_build.state::text;
        RETURN;
    END IF;
    SELECT a.id, a.number, a.drone_id, a.log_size, a.log_storage_key INTO v_attempt
    FROM builds_buildattempt a WHERE a.build_id = p_build AND a.number = v_build.attempt_count
    FOR UPDATE;
    IF NOT FOUND OR v_attempt.drone_id IS DISTINCT FROM p_drone THEN
        RETURN QUERY SELECT 'not_held'::text, NULL::integer, NULL::bigint, v_build.state::text;
        RETURN;
    END IF;
    IF v_attempt.log_storage_key <> '' THEN
        answer := 'archived';
    ELSIF p_start <> v_attempt.log_size THEN
        answer := 'range';
    ELSIF length(p_data) = 0 THEN
        answer := 'empty';
    ELSIF v_attempt.log_size + length(p_data) > p_max_bytes THEN
        answer := 'too_large';
    ELSE
        INSERT INTO builds_buildlogchunk (attempt_id, "offset", data) VALUES (v_attempt.id, p_start, p_data);
        UPDATE builds_buildattempt SET log_size = v_attempt.log_size + length(p_data) WHERE id = v_attempt.id;
        RETURN QUERY SELECT 'appended'::text, v_attempt.number::integer,
                            (v_attempt.log_size + length(p_data))::bigint, v_build.state::text;
        RETURN;
    END IF;
    RETURN QUERY SELECT answer, v_attempt.number::integer, v_attempt.log_size::bigint, v_build.state::text;
END
$$;
