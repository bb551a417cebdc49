-- The outbox becomes the directory's history, for watches that resume: it is
-- pruned to the retention from the oldest row, and the newest row pruned is
-- kept here, so that a resume point before it is refused rather than
-- replayed with a hole.
CREATE TABLE event_horizon (
    pruned_through BIGINT NOT NULL
);
INSERT INTO event_horizon (pruned_through)
    SELECT GREATEST(COALESCE(MIN(seq) - 1, 0), 1) FROM events;

-- A new outbox's numbering starts after the Unix microsecond it was made:
-- never 0 (which asks a watch for no replay, so a listing of a new directory
-- can still be resumed from), and past any number an earlier directory gave
-- out, so that a client resuming from one of those is told to list again.
-- An outbox that has numbered changes already keeps its numbers.
DO $$
DECLARE
    numbers TEXT := pg_get_serial_sequence('events', 'seq');
    used BOOLEAN;
    base BIGINT := (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT;
BEGIN
    EXECUTE format('SELECT is_called FROM %s', numbers) INTO used;
    IF NOT used THEN
        PERFORM setval(numbers, base, true);
        UPDATE event_horizon SET pruned_through = base;
    END IF;
END
$$;

-- A replay for some users reads theirs alone, however long the history.
CREATE INDEX events_by_user ON events (user_id, seq);
