-- ffdesk schema 3: failure intelligence and the complete audit trail.
--
-- jobs: what the last failure was (its class decides the retry policy), which nodes to avoid
-- (an "environment" failure is retried elsewhere), the preset's run policy as it was at submit
-- time, and the file actually written (keep-both may choose another name).
-- attempts: the input's fingerprint, the output's size / hash / probe, the failure class and
-- the FFmpeg process id, so "why does this file look wrong?" can be answered months later.

ALTER TABLE jobs
    ADD COLUMN failure_kind text,
    ADD COLUMN avoid_nodes  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN policy       jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN written      text;

ALTER TABLE attempts
    ADD COLUMN kind              text,
    ADD COLUMN pid               int,
    ADD COLUMN retry_at          timestamptz,
    ADD COLUMN input_size        bigint,
    ADD COLUMN input_mtime       timestamptz,
    ADD COLUMN input_hash        text,      -- blake2b-256 of size + first and last 8 MiB
    ADD COLUMN input_full_hash   text,      -- blake2b-256 of the whole file (setting full_hash)
    ADD COLUMN output_path       text,
    ADD COLUMN output_size       bigint,
    ADD COLUMN output_hash       text,
    ADD COLUMN output_full_hash  text,
    ADD COLUMN output_probe      jsonb;

-- Reprocess by state and age ("ffdesk retry --state dead --since 1h").
CREATE INDEX jobs_finished_idx ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;
-- "which node failed how": the quarantine check and the audit views.
CREATE INDEX attempts_node_idx ON attempts (node, id);
