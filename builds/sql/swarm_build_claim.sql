CREATE OR REPLACE FUNCTION swarm_build_claim(
    p_drone bigint, p_drone_name text, p_capacity integer, p_labels varchar[],
    p_now timestamptz, p_ack_deadline timestamptz, p_lease_until timestamptz
) RETURNS TABLE (claimed_attempt_id bigint, claimed_attempt_number integer, claimed_build jsonb, claimed_job jsonb)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    WITH held AS (
        SELECT count(*) AS n FROM builds_build
        WHERE drone_id = p_drone AND state IN ('assigned', 'running', 'canceling')
    ), candidate AS (
        SELECT b.id FROM builds_build b
        WHERE b.state = 'pending'
          AND (SELECT n FROM held) < GREATEST(p_capacity, 0)
          AND b.required_labels <@ p_labels
          AND NOT (b.avoid_drone_ids @> ARRAY[p_drone]::bigint[] AND b.avoid_until IS NOT NULL
                   AND b.avoid_until > p_now)
        ORDER BY b.queue_priority DESC, b.id
        FOR UPDATE OF b SKIP LOCKED
        LIMIT 1
    ), assigned AS (
        UPDATE builds_build b
        SET state = 'assigned', drone_id = p_drone, attempt_count = b.attempt_count + 1,
            assigned_at = p_now, ack_deadline = p_ack_deadline, lease_expires_at = p_lease_until
        FROM candidate WHERE b.id = candidate.id
        RETURNING b.id, b.number, b.job_id, b.state, b.branch, b.commit_sha, b.params, b.timeout_seconds,
                  b.lease_expires_at, b.attempt_count
    ), attempt AS (
        INSERT INTO builds_buildattempt (build_id, number, drone_id, state, failure_reason, detail, assigned_at,
                                         log_size, log_checksum, log_checksum_reported, log_storage_key)
        SELECT assigned.id, assigned.attempt_count, p_drone, 'assigned', '', '', p_now, 0, '', '', ''
        FROM assigned
        RETURNING builds_buildattempt.id, builds_buildattempt.build_id, builds_buildattempt.number
    ), event AS (
        INSERT INTO builds_buildevent (build_id, attempt_number, at, kind, actor, detail)
        SELECT assigned.id, assigned.attempt_count, p_now, 'claimed', 'drone:' || p_drone,
               jsonb_build_object('drone', p_drone_name)
        FROM assigned
    )
    SELECT attempt.id::bigint, attempt.number::integer,
           jsonb_build_object('id', assigned.id, 'number', assigned.number, 'state', assigned.state,
                              'branch', assigned.branch, 'commit_sha', assigned.commit_sha,
                              'params', assigned.params, 'timeout_seconds', assigned.timeout_seconds,
                              'lease_expires_at', assigned.lease_expires_at),
           jsonb_build_object('id', job.id, 'name', job.name, 'scm_url', job.scm_url,
                              'scm_credential_encrypted', job.scm_credential_encrypted,
                              'secrets_encrypted', job.secrets_encrypted, 'build_config', job.build_config)
    FROM attempt JOIN assigned ON assigned.id = attempt.build_id JOIN builds_job job ON job.id = assigned.job_id;
END
$$;
