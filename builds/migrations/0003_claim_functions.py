"""The claim and the agent's authentication as database functions, so claims take one round trip.

`swarm_agent_touch` is what every agent call does first: check the drone
token (touching its `last_used_at` at most once a minute, as the bearer
authentication does) and renew the leases of the drone's running builds. It
returns the drone's id, or NULL for a token that is not a live drone token.

`swarm_lock_drone_claims` serialises the claims of one drone (a transaction
advisory lock): its capacity holds however many claims it sends at once.

`swarm_build_claim` is the claim for a drone whose claims the caller has
serialised: check its capacity, pick the best pending build its labels allow
with `SKIP LOCKED` (a build another drone is claiming right now is passed
over), assign it, add the attempt and the `claimed` event, and return the
attempt with what the claim payload needs of the build and its job (jsonb).
Its statement runs after the lock with a snapshot of its own (a volatile
PL/pgSQL function), so it sees every earlier claim of the drone.

`swarm_agent_build_claims` is `POST /api/v1/builds/request` for a group of
drones in one transaction: for each request (in token order, so two groups
take the locks of drones they share in the same order) touch, lock the
drone's claims, read the drone and claim. Each request's answer is `view`
when the Django view must answer instead (unknown token, a drone that is
gone, a queue with limits), `none` when there is nothing to claim, or
`claimed`.

The plans of the statements inside are prepared once per connection.
Changing any of them means a new migration with `CREATE OR REPLACE FUNCTION`.
"""
from django.db import migrations

AGENT_TOUCH = r"""
CREATE OR REPLACE FUNCTION swarm_agent_touch(
    p_prefix text, p_digest text, p_now timestamptz, p_used_before timestamptz,
    p_lease_until timestamptz, p_renew_before timestamptz
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_drone bigint;
BEGIN
    WITH token AS (
        SELECT t.id AS token_id,
               CASE WHEN t.subject_id ~ '^[0-9]{1,18}$' THEN CAST(t.subject_id AS bigint) END AS drone_id
        FROM core_apitoken t
        WHERE t.prefix = p_prefix AND t.digest = p_digest AND t.scope = 'drone' AND t.subject_type = 'drone'
          AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > p_now)
    ), used AS (
        UPDATE core_apitoken SET last_used_at = p_now
        WHERE id = (SELECT token_id FROM token) AND (last_used_at IS NULL OR last_used_at < p_used_before)
    ), renewed AS (
        UPDATE builds_build SET lease_expires_at = p_lease_until
        WHERE drone_id = (SELECT drone_id FROM token) AND state IN ('running', 'canceling')
          AND lease_expires_at < p_renew_before
    )
    SELECT token.drone_id INTO v_drone FROM token;
    RETURN v_drone;
END
$$;
"""

LOCK_DRONE_CLAIMS = r"""
CREATE OR REPLACE FUNCTION swarm_lock_drone_claims(p_drone bigint) RETURNS void LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('swarm:drone-claims:' || p_drone, 0));
$$;
"""

BUILD_CLAIM = r"""
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
"""

AGENT_BUILD_CLAIMS = r"""
CREATE OR REPLACE FUNCTION swarm_agent_build_claims(
    p_prefixes text[], p_digests text[], p_free_slots integer[], p_labels jsonb,
    p_now timestamptz, p_used_before timestamptz, p_lease_until timestamptz, p_renew_before timestamptz,
    p_ack_deadline timestamptz, p_no_work_statuses text[]
) RETURNS TABLE (request_index integer, answer text, canceling_build_ids bigint[], claimed_attempt_id bigint,
                 claimed_attempt_number integer, claimed_build jsonb, claimed_job jsonb)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_limited boolean;
    v_drone_id bigint;
    v_drone record;
    v_labels varchar[];
    v_claimed record;
BEGIN
    v_limited := EXISTS (SELECT 1 FROM builds_queue q
                         WHERE q.max_concurrent IS NOT NULL OR q.tenant_rate_limit_per_minute IS NOT NULL);
    FOR request_index IN
        SELECT i FROM generate_subscripts(p_prefixes, 1) AS i ORDER BY p_prefixes[i], i
    LOOP
        answer := 'view';
        canceling_build_ids := NULL;
        claimed_attempt_id := NULL;
        claimed_attempt_number := NULL;
        claimed_build := NULL;
        claimed_job := NULL;
        v_drone_id := NULL;
        IF NOT v_limited THEN
            v_drone_id := swarm_agent_touch(p_prefixes[request_index], p_digests[request_index], p_now,
                                            p_used_before, p_lease_until, p_renew_before);
        END IF;
        IF v_drone_id IS NOT NULL THEN
            PERFORM swarm_lock_drone_claims(v_drone_id);
            SELECT d.id, d.name, d.status, d.labels, d.capacity,
                   ARRAY(SELECT b.id FROM builds_build b
                         WHERE b.drone_id = d.id AND b.state = 'canceling' ORDER BY b.id) AS canceling
            INTO v_drone FROM drones_drone d WHERE d.id = v_drone_id;
            IF FOUND THEN
                answer := 'none';
                canceling_build_ids := v_drone.canceling;
                IF p_free_slots[request_index] >= 1 AND NOT (v_drone.status = ANY (p_no_work_statuses)) THEN
                    IF jsonb_typeof(v_drone.labels) = 'array' AND jsonb_array_length(v_drone.labels) > 0 THEN
                        v_labels := ARRAY(SELECT jsonb_array_elements_text(v_drone.labels));
                    ELSE
                        v_labels := ARRAY(SELECT jsonb_array_elements_text(
                            COALESCE(p_labels -> (request_index - 1), '[]'::jsonb)));
                    END IF;
                    SELECT * INTO v_claimed
                    FROM swarm_build_claim(v_drone.id, v_drone.name, COALESCE(v_drone.capacity, 0), v_labels,
                                           p_now, p_ack_deadline, p_lease_until);
                    IF FOUND THEN
                        answer := 'claimed';
                        claimed_attempt_id := v_claimed.claimed_attempt_id;
                        claimed_attempt_number := v_claimed.claimed_attempt_number;
                        claimed_build := v_claimed.claimed_build;
                        claimed_job := v_claimed.claimed_job;
                    END IF;
                END IF;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0002_default_queues"),
        ("drones", "0003_heartbeat_hot_updates"),
        ("core", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(AGENT_TOUCH, reverse_sql="DROP FUNCTION IF EXISTS swarm_agent_touch"),
        migrations.RunSQL(LOCK_DRONE_CLAIMS, reverse_sql="DROP FUNCTION IF EXISTS swarm_lock_drone_claims"),
        migrations.RunSQL(BUILD_CLAIM, reverse_sql="DROP FUNCTION IF EXISTS swarm_build_claim"),
        migrations.RunSQL(AGENT_BUILD_CLAIMS, reverse_sql="DROP FUNCTION IF EXISTS swarm_agent_build_claims"),
    ]
