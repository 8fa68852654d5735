"""A drone's log append as one database function, so a `PATCH /builds/<id>/log` is one round trip.

`swarm_agent_log_append` touches the drone token (`swarm_agent_touch`),
locks the current attempt of a build the drone holds, and — when the patch
starts at the log's size, names that attempt (if it names one), the log is
not archived and stays within its size limit — stores the chunk and moves
the size on. It answers `appended` with the attempt number, the new size and
the build's state, or `view` for anything else: the Django view then judges
the request (416 with the stored size, 409 for a superseded attempt, 413, …).
"""
from django.db import migrations

LOG_APPEND = r"""
CREATE OR REPLACE FUNCTION swarm_agent_log_append(
    p_prefix text, p_digest text, p_now timestamptz, p_used_before timestamptz,
    p_lease_until timestamptz, p_renew_before timestamptz,
    p_build bigint, p_start bigint, p_data bytea, p_attempt integer, p_max_bytes bigint
) RETURNS TABLE (answer text, attempt_number integer, log_size bigint, build_state text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_drone bigint;
    v_attempt record;
BEGIN
    v_drone := swarm_agent_touch(p_prefix, p_digest, p_now, p_used_before, p_lease_until, p_renew_before);
    IF v_drone IS NOT NULL THEN
        SELECT a.id, a.number, a.log_size, a.log_storage_key, b.state INTO v_attempt
        FROM builds_build b JOIN builds_buildattempt a ON a.build_id = b.id AND a.number = b.attempt_count
        WHERE b.id = p_build AND b.drone_id = v_drone AND a.drone_id = b.drone_id
        FOR UPDATE OF a;
        IF FOUND AND v_attempt.log_storage_key = '' AND p_start = v_attempt.log_size
           AND (p_attempt IS NULL OR p_attempt = v_attempt.number)
           AND v_attempt.log_size + length(p_data) <= p_max_bytes AND length(p_data) > 0 THEN
            INSERT INTO builds_buildlogchunk (attempt_id, "offset", data) VALUES (v_attempt.id, p_start, p_data);
            UPDATE builds_buildattempt SET log_size = v_attempt.log_size + length(p_data) WHERE id = v_attempt.id;
            RETURN QUERY SELECT 'appended'::text, v_attempt.number::integer,
                                (v_attempt.log_size + length(p_data))::bigint, v_attempt.state::text;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT 'view'::text, NULL::integer, NULL::bigint, NULL::text;
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0003_claim_functions"),
    ]

    operations = [
        migrations.RunSQL(LOG_APPEND, reverse_sql="DROP FUNCTION IF EXISTS swarm_agent_log_append"),
    ]
