-- Users, in creation order. `position` orders listings (keyset pagination)
-- and, with AUTOINCREMENT, is never reused, even after the newest user is
-- deleted. `email_key` is the lowercased address: its unique index is what
-- makes emails unique without regard to case, under any concurrency.
CREATE TABLE users (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL UNIQUE,
    role INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    bio TEXT,
    -- A CreateUser's idempotency key and its request, kept with the user so
    -- that a retry after a restart still finds them.
    idempotency_key TEXT UNIQUE,
    idempotency_request TEXT
);

CREATE INDEX users_by_role ON users (role, position);
