-- ffdesk schema 4: storage roots, capability routing, priority aging.
--
-- A job names what a node must have to run it; the claim returns only jobs the claiming
-- node satisfies (array containment against its registry row), so a node never picks up a
-- job it cannot run. Versions compare as int arrays, in order.

CREATE TABLE roots (
    name        text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text
);

ALTER TABLE nodes
    ADD COLUMN roots_read   text[] NOT NULL DEFAULT '{}',  -- validated: exists and readable
    ADD COLUMN roots_write  text[] NOT NULL DEFAULT '{}',  -- and writable
    ADD COLUMN roots_status jsonb NOT NULL DEFAULT '{}',   -- name -> {path, read, write, error}
    ADD COLUMN ffmpeg_semver int[];                        -- {7,1,0}: compared in order

ALTER TABLE jobs
    ADD COLUMN in_roots    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN out_roots   text[] NOT NULL DEFAULT '{}',
    ADD COLUMN requires    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN tags        text[] NOT NULL DEFAULT '{}',
    ADD COLUMN pinned_node text,
    ADD COLUMN ffmpeg_min  text,   -- "6.0": the node's FFmpeg must be at least this
    ADD COLUMN ffmpeg_max  text;   -- "7.1": and at most this (7.1.x included)

-- Cluster-wide knobs every node must agree on (one row).
CREATE TABLE cluster (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    -- Priority aging: a queued job gains one priority step per aging_s seconds waited, so no
    -- job of priority P submitted more than (P - p) * aging_s after a job of priority p
    -- runs before it (the backlog queued ahead of it still drains first).
    aging_s double precision NOT NULL DEFAULT 60 CHECK (aging_s > 0)
);
INSERT INTO cluster DEFAULT VALUES;

-- The routing test of the claim, as a function the planner does not inline: it cannot
-- estimate array containment and, seeing the conditions spelled out, guesses almost no queued
-- job passes and reads and sorts the whole queue. Behind a function it assumes a fair share
-- passes and walks the ordered claim index, stopping after a few hundred rows.
CREATE FUNCTION ffdesk_can_run(
    in_roots text[], out_roots text[], requires text[], tags text[],
    ffmpeg_min text, ffmpeg_max text,
    roots_read text[], roots_write text[], encoders text[], node_tags text[], semver int[]
) RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE COST 5 AS $$
BEGIN
    RETURN in_roots <@ roots_read AND out_roots <@ roots_write
       AND requires <@ encoders AND tags <@ node_tags
       AND (ffmpeg_min IS NULL OR semver >= string_to_array(ffmpeg_min, '.')::int[])
       AND (ffmpeg_max IS NULL
            OR semver[1:cardinality(string_to_array(ffmpeg_max, '.'))]
               <= string_to_array(ffmpeg_max, '.')::int[]);
END $$;
