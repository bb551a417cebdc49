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

-- Numbering starts at 2: change 1 stands for the empty directory, so that
-- a listing always reports a sequence above 0 (0 asks a watch for no
-- replay) and a cache that lists a new directory can still resume.
INSERT INTO sqlite_sequence (name, seq) VALUES ('events', 1);

-- The newest change pruned: a resume point before it cannot be replayed
-- whole.
CREATE TABLE event_horizon (
    pruned_through INTEGER NOT NULL
);
INSERT INTO event_horizon (pruned_through) VALUES (1);
