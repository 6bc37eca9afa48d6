-- Deterministic sqlite3 CLI workload for tests/programs/sqlite.sh.  No random(), no time, no
-- file names in the output: it must be byte-identical with and without the shim.
-- Debian's libsqlite3 is built with SYSTEM_MALLOC and OMIT_LOOKASIDE: every allocation is a
-- malloc/realloc/free call.
.bail on
.headers off
.mode list
.separator |
PRAGMA page_size = 1024;          -- small pages first (page cache entries < 4 KiB) ...
PRAGMA cache_size = -8000;
PRAGMA journal_mode = DELETE;
PRAGMA foreign_keys = ON;
PRAGMA threads = 2;               -- the sorter may use helper threads (cross-thread frees)

CREATE TABLE users(
  id     INTEGER PRIMARY KEY,
  name   TEXT NOT NULL,
  email  TEXT NOT NULL UNIQUE,
  grp    INTEGER NOT NULL,
  score  REAL NOT NULL,
  bio    TEXT,
  avatar BLOB
);
CREATE TABLE orders(
  id      INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  amount  INTEGER NOT NULL,
  note    TEXT,
  payload BLOB
);
CREATE INDEX users_grp_score ON users(grp, score);
CREATE INDEX users_name ON users(name);
CREATE INDEX orders_user ON orders(user_id);
CREATE INDEX orders_amount_note ON orders(amount, note);

BEGIN;
WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < 40000)
INSERT INTO users(id, name, email, grp, score, bio, avatar)
SELECT x,
       printf('user-%06d-%s', x, substr('abcdefghijklmnopqrstuvwxyz', 1 + x % 26, 1 + x % 7)),
       printf('u%d@example.%s', x, CASE x % 3 WHEN 0 THEN 'org' WHEN 1 THEN 'com' ELSE 'net' END),
       x % 97,
       (x * 7919 % 100003) / 100.0,
       printf('%.*c', (x * 31) % 400, char(97 + x % 26)),
       -- mostly small blobs, every 50th one 5-9 KiB (overflow pages, > 4 KiB buffers)
       CAST(printf('%.*c', CASE WHEN x % 50 = 0 THEN 5000 + x % 4000 ELSE x % 300 END,
                   char(65 + x % 26)) AS BLOB)
FROM seq;
WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < 60000)
INSERT INTO orders(id, user_id, amount, note, payload)
SELECT x, 1 + (x * 13) % 40000, (x * 104729) % 10007,
       'note ' || x || ' ' || printf('%.*c', x % 60, '#'),
       zeroblob(x % 1500)
FROM seq;
COMMIT;
SELECT 'rows', (SELECT count(*) FROM users), (SELECT count(*) FROM orders),
       (SELECT sum(length(avatar)) FROM users), (SELECT sum(length(payload)) FROM orders);

-- updates (in-place and growing rows), deletes (with cascade), re-inserts
UPDATE users SET score = round(score * 1.5, 2), bio = bio || '-updated' WHERE grp % 3 = 0;
UPDATE orders SET note = note || printf('%.*c', 200, '+') WHERE amount % 5 = 0;
DELETE FROM users WHERE id % 11 = 0;
DELETE FROM orders WHERE amount % 7 = 0;
INSERT INTO users(name, email, grp, score, bio, avatar)
  SELECT name || '-copy', 'copy-' || email, grp, score, upper(bio), avatar
  FROM users WHERE id % 17 = 1;
SELECT 'after_dml', (SELECT count(*) FROM users), (SELECT count(*) FROM orders),
       (SELECT count(*) FROM orders WHERE user_id NOT IN (SELECT id FROM users));

-- queries: GROUP BY, ORDER BY on indexed and non-indexed expressions, joins, windows, json
SELECT grp, count(*), round(avg(score), 3), max(length(bio)), min(name)
  FROM users GROUP BY grp ORDER BY count(*) DESC, grp LIMIT 15;
SELECT u.grp, count(o.id), sum(o.amount), round(avg(length(o.note)), 2)
  FROM users u JOIN orders o ON o.user_id = u.id
  GROUP BY u.grp HAVING count(o.id) > 100 ORDER BY sum(o.amount) DESC LIMIT 10;
SELECT id, name, score FROM users ORDER BY substr(bio, 3) DESC, score, id LIMIT 8;
SELECT name, rnk FROM (
  SELECT name, rank() OVER (PARTITION BY grp ORDER BY score DESC, id) AS rnk,
         grp FROM users) WHERE rnk <= 2 ORDER BY grp, rnk LIMIT 20;
SELECT length(json_group_array(json_object('id', id, 'n', name, 'g', grp)))
  FROM (SELECT * FROM users WHERE grp < 10 ORDER BY id);
SELECT group_concat(DISTINCT grp) FROM (SELECT grp FROM users ORDER BY grp DESC);
SELECT count(*), count(DISTINCT note), sum(length(payload)) FROM orders WHERE note LIKE '%##%';
-- big sort that spills past the page cache (sorter, temp b-trees)
SELECT hex(sha3_query('SELECT id, name, email, grp, score, bio, avatar FROM users ORDER BY bio, email'));
SELECT hex(sha3_query('SELECT user_id, amount, note, length(payload) FROM orders ORDER BY note DESC, id'));

-- full-text search (FTS5: many small allocations of its own)
CREATE VIRTUAL TABLE docs USING fts5(title, body);
INSERT INTO docs(rowid, title, body)
  SELECT id, name, bio || ' ' || email || ' group' || grp FROM users WHERE id % 4 = 0;
SELECT count(*) FROM docs WHERE docs MATCH 'group42 OR group7';
SELECT rowid, title FROM docs WHERE docs MATCH 'example AND org' ORDER BY rank, rowid LIMIT 5;

-- temp tables, a CTE materialised, then drop
CREATE TEMP TABLE agg AS
  SELECT user_id, count(*) AS n, group_concat(amount, ',') AS amounts
  FROM orders GROUP BY user_id;
SELECT count(*), max(n), max(length(amounts)) FROM agg;
DROP TABLE agg;

-- change the page size (every page rewritten through a 4 KiB page cache), analyse, check
PRAGMA page_size = 4096;
VACUUM;
ANALYZE;
PRAGMA page_size;
PRAGMA integrity_check;
PRAGMA foreign_key_check;
SELECT 'final', (SELECT count(*) FROM users), (SELECT count(*) FROM orders),
       (SELECT count(*) FROM docs);
SELECT 'users', hex(sha3_query('SELECT * FROM users ORDER BY id'));
SELECT 'orders', hex(sha3_query('SELECT * FROM orders ORDER BY id'));
.sha3sum
