-- The search index of a PostgreSQL store (features/search/postgres.py).
--
-- Text is folded in Python before it gets here (lower case, no accents, CJK
-- runs as character pairs: features/search/text.py); this configuration
-- then stems English words with snowball and, unlike the built-in
-- 'english', keeps stop words, as SQLite FTS5 does: one conformance suite
-- holds for both engines.
CREATE TEXT SEARCH DICTIONARY tidings_search_stem (TEMPLATE = snowball, Language = english);
CREATE TEXT SEARCH CONFIGURATION tidings_search (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION tidings_search
    ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
    WITH tidings_search_stem;

-- Generations: the live one answers; a rebuild fills another, then promotes
-- it (dropping the old one and, by cascade, its entries).
CREATE TABLE search_generations (
    name     text    PRIMARY KEY,
    position bigint  NOT NULL DEFAULT 0,
    live     boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX search_one_live ON search_generations (live) WHERE live;

CREATE TABLE search_entries (
    generation      text     NOT NULL REFERENCES search_generations (name) ON DELETE CASCADE,
    conversation_id text     NOT NULL,
    seq             bigint   NOT NULL,
    sender_id       text     NOT NULL,
    ts              bigint   NOT NULL,
    text            text     NOT NULL,
    body            tsvector NOT NULL,
    PRIMARY KEY (generation, conversation_id, seq)
);
CREATE INDEX search_entries_body ON search_entries USING gin (body);
CREATE INDEX search_entries_by_ts ON search_entries (generation, ts);
