-- A bead's id from its project's prefix and its sequence number, exactly as `BeadId::new` builds
-- it (prefix, '-', the number in lowercase base 36), so that a plain create is one statement.
CREATE FUNCTION loom_bead_id(prefix TEXT, seq BIGINT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    digits CONSTANT TEXT := '0123456789abcdefghijklmnopqrstuvwxyz';
    n BIGINT := seq;
    out TEXT := '';
BEGIN
    IF n < 0 THEN
        RAISE EXCEPTION 'bead sequence numbers are not negative: %', seq;
    END IF;
    LOOP
        out := substr(digits, (n % 36)::INT + 1, 1) || out;
        n := n / 36;
        EXIT WHEN n = 0;
    END LOOP;
    RETURN prefix || '-' || out;
END
$$;
