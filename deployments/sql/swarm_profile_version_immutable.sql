CREATE OR REPLACE FUNCTION swarm_profile_version_immutable() RETURNS trigger AS $$
BEGIN
    -- Every change to a deployment profile is a new version; a version row is never rewritten.
    RAISE EXCEPTION 'deployment profile version % is immutable', OLD.id USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;
