-- Users, in creation order. `position` orders listings (keyset pagination)
-- and comes from one sequence, so it is unique across replicas. `email_key`
-- is the lowercased address: its unique index makes emails unique without
-- regard to case, under any concurrency.
CREATE TABLE users (
    position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL UNIQUE,
    role INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    bio TEXT,
    -- A CreateUser's idempotency key and its request, kept with the user.
    idempotency_key TEXT UNIQUE,
    idempotency_request TEXT
);

CREATE INDEX users_by_role ON users (role, position);

-- The outbox behind WatchUserEvents across replicas: each write inserts its
-- events here in its own transaction, so an event exists exactly when its
-- write committed. Writers take a transaction-scoped advisory lock first, so
-- that `seq` order is commit order and a reader never skips a late commit.
-- NOTIFY only wakes the readers; the rows are the truth.
CREATE TABLE events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id TEXT NOT NULL,
    payload BYTEA NOT NULL,
    at_ms BIGINT NOT NULL
);
