-- Feed positions in a table of their own (PostgreSQL only; SQLite numbers its
-- feed by `seq`, which its single writer commits in order).
--
-- The sequencer used to number an event by setting `events.feed_pos`. That UPDATE
-- wrote a new version of the whole event row (its ~1 KB JSONB document included)
-- and, `feed_pos` being indexed, a new entry in every index of `events`: never a
-- HOT update, once more per event after its INSERT, and a dead row for vacuum
-- (bench/README.md, session 12). Now the INSERT of an event also queues its `seq`
-- in `events_unpositioned` (same statement), and the sequencer moves queued events
-- to `event_positions` in `seq` order, still one process at a time (the 'feed'
-- row of outbox_cursors) and still only events already committed: a queued row
-- commits with its event, so it is invisible to the sequencer until then.
CREATE TABLE event_positions (
    feed_pos  BIGINT PRIMARY KEY,
    seq       BIGINT NOT NULL UNIQUE
);
CREATE TABLE events_unpositioned (
    seq  BIGINT PRIMARY KEY
);

INSERT INTO event_positions (feed_pos, seq)
    SELECT feed_pos, seq FROM events WHERE feed_pos IS NOT NULL;
INSERT INTO events_unpositioned (seq)
    SELECT seq FROM events WHERE feed_pos IS NULL;

DROP INDEX events_unpositioned_idx;
DROP INDEX events_feed_pos_key;
ALTER TABLE events DROP COLUMN feed_pos;
