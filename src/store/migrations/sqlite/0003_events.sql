-- The numbered changes, for watches that resume. Each write inserts its
-- changes here in its own transaction, so a change has a number exactly
-- when it committed; AUTOINCREMENT never gives a number twice, even after
-- the newest row is pruned. Pruned from the oldest to the retention.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    user_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    at_ms INTEGER NOT NULL
);

-- Numbering starts after the Unix microsecond the history was made: never 0
-- (which asks a watch for no replay, so a listing of a new directory can
-- still be resumed from), and past any number an earlier directory gave
-- out, so that a client resuming from one of those is told to list again.
INSERT INTO sqlite_sequence (name, seq)
    VALUES ('events', CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER));

-- The newest change pruned: a resume point before it cannot be replayed
-- whole.
CREATE TABLE event_horizon (
    pruned_through INTEGER NOT NULL
);
INSERT INTO event_horizon (pruned_through)
    SELECT seq FROM sqlite_sequence WHERE name = 'events';
