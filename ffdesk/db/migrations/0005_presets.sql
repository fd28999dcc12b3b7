-- ffdesk schema 5: the preset library.
--
-- Presets saved by users for the whole cluster (the built-ins stay in the program's
-- builtin.toml and are never stored here). A row holds one preset table in the format of
-- builtin.toml: description, args, output, needs, and the run policy keys as written
-- ("2G" stays "2G"). Every save takes a new revision from the global sequence, so an edit can
-- check that nobody changed the preset in between. Jobs copy the args at submit time: editing
-- or removing a preset never changes a queued job.

CREATE TABLE presets (
    name         text PRIMARY KEY
                 CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]*$' AND length(name) <= 64),
    description  text NOT NULL DEFAULT '',
    args         jsonb NOT NULL CHECK (jsonb_typeof(args) = 'array'),
    output       text NOT NULL,
    needs        text[] NOT NULL DEFAULT '{}',
    policy       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(policy) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text,                    -- user@host
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text,
    revision     bigint NOT NULL DEFAULT nextval('ffdesk_revision')
);
