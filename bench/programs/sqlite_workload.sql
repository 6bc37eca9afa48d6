-- Workload 9 (sqlite3): an in-memory database with indexes, updates and deletes.
-- The harness replaces @ROWS@ and runs:  sqlite3 :memory: ".read FILE"
-- Deterministic (no random()): the output is identical under any correct allocator.
PRAGMA cache_size = -262144;
CREATE TABLE item(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL, n INTEGER NOT NULL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < @ROWS@)
INSERT INTO item(k, v, n)
  SELECT printf('%08x', (x * 2654435761) % 4294967296),
         substr('abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789', 1 + x % 17, 10 + (x * 7919) % 150),
         (x * 48271) % 1000
  FROM c;
CREATE INDEX item_k ON item(k);
CREATE INDEX item_n ON item(n, k);
SELECT 'groups', count(*), sum(c), sum(l) FROM (SELECT n, count(*) AS c, sum(length(v)) AS l FROM item GROUP BY n);
DELETE FROM item WHERE n % 3 = 0;
UPDATE item SET v = v || '-updated-' || id WHERE n % 5 = 1;
CREATE TABLE tag(item_id INTEGER NOT NULL, tag TEXT NOT NULL);
INSERT INTO tag SELECT id, 'tag' || (id % 97) FROM item;
INSERT INTO tag SELECT id, 'tag' || (id % 89) FROM item WHERE id % 2 = 0;
CREATE INDEX tag_tag ON tag(tag, item_id);
SELECT 'join', count(*), sum(length(i.v)) FROM tag t JOIN item i ON i.id = t.item_id WHERE t.tag IN ('tag1', 'tag2', 'tag3');
SELECT 'lookup', count(*) FROM item a JOIN item b ON a.k = b.k;
DELETE FROM item WHERE id % 4 = 0;
DELETE FROM tag WHERE item_id NOT IN (SELECT id FROM item);
SELECT 'left', (SELECT count(*) FROM item), (SELECT count(*) FROM tag), (SELECT sum(n) FROM item);
SELECT 'top', group_concat(k) FROM (SELECT k FROM item ORDER BY v DESC, k LIMIT 20);
DROP INDEX item_k;
CREATE INDEX item_vk ON item(v, k);
SELECT 'distinct', count(DISTINCT v) FROM item;
VACUUM;
SELECT 'end', count(*), sum(length(k) + length(v)) FROM item;
