-- Search (filters, orders, labels) and versions (etags).
--
-- `updated_at` starts as `created_at`; `revision` counts a user's versions,
-- and the etag is made from it. `labels` is the user's labels as a JSON
-- object, read with the row; `user_labels` holds them again, one row each,
-- with the folded value, so that `labels.KEY = "v"` is an index lookup.
-- `name_key` and `bio_key` are the folded name and bio that filters and
-- the name order compare: usersvc fills them for existing users when it
-- opens the database, with the same folding as for new ones.
--
-- Every text that is compared or sorted is COLLATE "C": byte order, which
-- is the order of the other stores, whatever the database's locale.
ALTER TABLE users ADD COLUMN updated_at BIGINT;
UPDATE users SET updated_at = created_at;
ALTER TABLE users ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN name_key TEXT COLLATE "C";
ALTER TABLE users ADD COLUMN bio_key TEXT COLLATE "C";
ALTER TABLE users ALTER COLUMN email_key TYPE TEXT COLLATE "C";
ALTER TABLE users ALTER COLUMN id TYPE TEXT COLLATE "C";

CREATE TABLE user_labels (
    position BIGINT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value_key TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (position, key)
);
CREATE INDEX user_labels_by_value ON user_labels (key, value_key, position);

CREATE INDEX users_by_name ON users (name_key, id);
CREATE INDEX users_by_created ON users (created_at, id);
CREATE INDEX users_by_updated ON users (updated_at, id);

-- Keys the service keeps with the data: `page-token` signs SearchUsers'
-- page tokens, so that every replica accepts the others' tokens and a
-- restart keeps them good. usersvc creates it, random, at first start.
CREATE TABLE keys (name TEXT PRIMARY KEY, value BYTEA NOT NULL);

-- How many users there are, for SearchUsers' total_size without a filter:
-- COUNT(*) reads every row (a tenth of a second at a million users), this
-- row one. Statement triggers keep it, once per INSERT or DELETE however
-- many rows it touches; writers already take one lock, so the row adds no
-- contention.
CREATE TABLE user_count (n BIGINT NOT NULL);
INSERT INTO user_count SELECT COUNT(*) FROM users;
-- Each function finds user_count on the search path it was made with,
-- whatever the path of the session that writes.
CREATE FUNCTION usersvc_count_inserted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE user_count SET n = n + (SELECT COUNT(*) FROM inserted);
    RETURN NULL;
END
$$;
CREATE FUNCTION usersvc_count_deleted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE user_count SET n = n - (SELECT COUNT(*) FROM deleted);
    RETURN NULL;
END
$$;
CREATE TRIGGER users_counted_insert AFTER INSERT ON users
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION usersvc_count_inserted();
CREATE TRIGGER users_counted_delete AFTER DELETE ON users
    REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION usersvc_count_deleted();
CREATE FUNCTION usersvc_count_truncated() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE user_count SET n = 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_counted_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION usersvc_count_truncated();
