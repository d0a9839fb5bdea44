-- Lets one append statement refuse a whole batch when one of its commands turns out to be recorded
-- already. The ingester decides most batches without first asking which commands are recorded (see
-- `PgEventStore::append_new`); a decision made on that assumption must not be appended.
CREATE FUNCTION socialnet_expect_new(inserted BIGINT, expected BIGINT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
BEGIN
    IF inserted <> expected THEN
        RAISE EXCEPTION 'a command of this batch was recorded before (% of % new)', inserted, expected
            USING ERRCODE = 'SN409';
    END IF;
    RETURN inserted;
END $$;
