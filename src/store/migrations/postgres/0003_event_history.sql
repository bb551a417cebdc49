-- The outbox becomes the directory's history, for watches that resume: it is
-- pruned to the retention from the oldest row, and the newest row pruned is
-- kept here, so that a resume point before it is refused rather than
-- replayed with a hole.
CREATE TABLE event_horizon (
    pruned_through BIGINT NOT NULL
);
INSERT INTO event_horizon (pruned_through)
    SELECT GREATEST(COALESCE(MIN(seq) - 1, 0), 1) FROM events;

-- Numbering starts at 2: change 1 stands for the empty directory, so that a
-- listing always reports a sequence above 0 (0 asks a watch for no replay)
-- and a cache that lists a new directory can still resume. An outbox that
-- has numbered changes already is past it.
DO $$
DECLARE
    numbers TEXT := pg_get_serial_sequence('events', 'seq');
    used BOOLEAN;
BEGIN
    EXECUTE format('SELECT is_called FROM %s', numbers) INTO used;
    IF NOT used THEN
        PERFORM setval(numbers, 1, true);
    END IF;
END
$$;

-- A replay for some users reads theirs alone, however long the history.
CREATE INDEX events_by_user ON events (user_id, seq);
