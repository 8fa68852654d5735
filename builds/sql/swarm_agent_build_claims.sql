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
    v_claim record;
BEGIN
    -- `POST /api/v1/builds/request` for a group of drones in one transaction. For each request (in token
    -- order, so two groups take the locks of drones they share in the same order): touch the token, then
    -- the drone's claim. `answer` is `view` when nothing was written for it and Django's view must answer
    -- (a token that is no live drone token, or a queue with limits), else the drone claim's answer.
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
            SELECT * INTO v_claim
            FROM swarm_drone_build_claim(v_drone_id, p_free_slots[request_index],
                                         ARRAY(SELECT jsonb_array_elements_text(
                                             COALESCE(p_labels -> (request_index - 1), '[]'::jsonb)))::varchar[],
                                         p_now, p_ack_deadline, p_lease_until, p_no_work_statuses);
            answer := v_claim.answer;
            canceling_build_ids := v_claim.canceling_build_ids;
            claimed_attempt_id := v_claim.claimed_attempt_id;
            claimed_attempt_number := v_claim.claimed_attempt_number;
            claimed_build := v_claim.claimed_build;
            claimed_job := v_claim.claimed_job;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
