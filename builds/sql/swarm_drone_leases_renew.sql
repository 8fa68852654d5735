CREATE OR REPLACE FUNCTION swarm_drone_leases_renew(
    p_drone bigint, p_lease_until timestamptz, p_renew_before timestamptz
) RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_renewed integer;
BEGIN
    -- Any agent call proves the drone alive. Only leases more than a second old are rewritten, so a
    -- busy log stream does not turn every PATCH into an extra row update.
    UPDATE builds_build SET lease_expires_at = p_lease_until
    WHERE drone_id = p_drone AND state IN ('running', 'canceling') AND lease_expires_at < p_renew_before;
    GET DIAGNOSTICS v_renewed = ROW_COUNT;
    RETURN v_renewed;
END
$$;
