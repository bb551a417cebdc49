-- Search (filters, orders, labels) and versions (etags).
--
-- `updated_at` starts as `created_at`; `revision` counts a user's versions,
-- and the etag is made from it. `labels` is the user's labels as a JSON
-- object, read with the row; `user_labels` holds them again, one row each,
-- with the folded value, so that `labels.KEY = "v"` is an index lookup.
-- `name_key` and `bio_key` are the folded name and bio that filters and
-- the name order compare: usersvc fills them for existing users when it
-- opens the database, with the same folding as for new ones (SQLite's
-- lower() folds ASCII only).
ALTER TABLE users ADD COLUMN updated_at INTEGER;
UPDATE users SET updated_at = created_at;
ALTER TABLE users ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN name_key TEXT;
ALTER TABLE users ADD COLUMN bio_key TEXT;

CREATE TABLE user_labels (
    position INTEGER NOT NULL,
    key TEXT NOT NULL,
    value_key TEXT NOT NULL,
    PRIMARY KEY (position, key)
) WITHOUT ROWID;
CREATE INDEX user_labels_by_value ON user_labels (key, value_key, position);

CREATE INDEX users_by_name ON users (name_key, id);

CREATE INDEX users_by_created ON users (created_at, id);
CREATE INDEX users_by_updated ON users (updated_at, id);

-- Keys the service keeps with the data: `page-token` signs SearchUsers'
-- page tokens, so that every replica accepts the others' tokens and a
-- restart keeps them good. usersvc creates it, random, at first start.
CREATE TABLE keys (name TEXT PRIMARY KEY, value BLOB NOT NULL);
