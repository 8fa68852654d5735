CREATE OR REPLACE FUNCTION swarm_drone_build_claim(
    p_drone bigint, p_free_slots integer, p_labels varchar[], p_now timestamptz, p_ack_deadline timestamptz,
    p_lease_until timestamptz, p_no_work_statuses text[]
) RETURNS TABLE (answer text, canceling_build_ids bigint[], claimed_attempt_id bigint, claimed_attempt_number integer,
                 claimed_build jsonb, claimed_job jsonb)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_drone record;
    v_labels varchar[];
    v_claimed record;
BEGIN
    -- One drone's claim, the same for `build_claim` (Django's view) and for `swarm_agent_build_claims`
    -- (the event loop). `answer`: `limited` (a queue caps concurrency or tenant start rates: the caller
    -- claims step by step, builds/services/claims.py), `gone` (no such drone), `none` or `claimed`.
    IF EXISTS (SELECT 1 FROM builds_queue q
               WHERE q.max_concurrent IS NOT NULL OR q.tenant_rate_limit_per_minute IS NOT NULL) THEN
        RETURN QUERY SELECT 'limited'::text, NULL::bigint[], NULL::bigint, NULL::integer, NULL::jsonb, NULL::jsonb;
        RETURN;
    END IF;
    -- Serialise this drone's claims, so its capacity holds however many it sends at once.
    PERFORM swarm_lock_drone_claims(p_drone);
    SELECT d.id, d.name, d.status, d.labels, d.capacity,
           ARRAY(SELECT b.id FROM builds_build b
                 WHERE b.drone_id = d.id AND b.state = 'canceling' ORDER BY b.id) AS canceling
    INTO v_drone FROM drones_drone d WHERE d.id = p_drone;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'gone'::text, NULL::bigint[], NULL::bigint, NULL::integer, NULL::jsonb, NULL::jsonb;
        RETURN;
    END IF;
    IF p_free_slots >= 1 AND NOT (v_drone.status = ANY (p_no_work_statuses)) THEN
        -- The drone's registered labels win; the claim's own labels count only when it registered none.
        IF jsonb_typeof(v_drone.labels) = 'array' AND jsonb_array_length(v_drone.labels) > 0 THEN
            v_labels := ARRAY(SELECT jsonb_array_elements_text(v_drone.labels));
        ELSE
            v_labels := COALESCE(p_labels, ARRAY[]::varchar[]);
        END IF;
        SELECT * INTO v_claimed
        FROM swarm_build_claim(v_drone.id, v_drone.name, COALESCE(v_drone.capacity, 0), v_labels,
                               p_now, p_ack_deadline, p_lease_until);
        IF FOUND THEN
            RETURN QUERY SELECT 'claimed'::text, v_drone.canceling, v_claimed.claimed_attempt_id,
                                v_claimed.claimed_attempt_number, v_claimed.claimed_build, v_claimed.claimed_job;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT 'none'::text, v_drone.canceling, NULL::bigint, NULL::integer, NULL::jsonb, NULL::jsonb;
END
$$;
