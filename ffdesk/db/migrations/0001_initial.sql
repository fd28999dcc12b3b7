-- ffdesk schema 1: nodes, jobs, attempts (audit of every run), events (who did what).
--
-- Every change to a job or node row takes a new revision from one global sequence, so a
-- consumer that remembers the highest revision it has seen can always catch up with
-- "revision > last seen" (NOTIFY is only a wake-up hint; a lost one costs latency, not data).

CREATE SEQUENCE ffdesk_revision;
CREATE SEQUENCE ffdesk_claim;  -- fencing tokens: one per claim, never reused

CREATE TABLE nodes (
    identifier          text PRIMARY KEY,
    session             uuid NOT NULL,
    host                text NOT NULL,
    pid                 int,
    pid_created         double precision,        -- with pid: tells a dead process from a reused PID
    os                  text,
    arch                text,
    cpu                 text,
    cores               int,
    ram_bytes           bigint,
    app_version         text,
    ffmpeg_version      text,
    ffmpeg_fingerprint  text,
    encoders            text[] NOT NULL DEFAULT '{}',
    tags                text[] NOT NULL DEFAULT '{}',
    slots               int NOT NULL,
    cpu_percent         real,                     -- load, written by every heartbeat
    mem_percent         real,
    heartbeat_s         real NOT NULL DEFAULT 5,  -- this node's beat: stale after 2, lost after
    lease_s             real NOT NULL DEFAULT 15, -- its lease (each node may differ)
    state               text NOT NULL DEFAULT 'online'
                        CHECK (state IN ('online', 'paused', 'draining', 'offline', 'quarantined')),
    state_reason        text,
    started_at          timestamptz NOT NULL DEFAULT now(),
    heartbeat_at        timestamptz NOT NULL DEFAULT now(),
    revision            bigint NOT NULL DEFAULT nextval('ffdesk_revision'),
    xid                 xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE TABLE jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'dead')),
    priority        int NOT NULL DEFAULT 0,
    input           text NOT NULL,
    output          text NOT NULL,
    preset          text NOT NULL,
    preset_args     jsonb NOT NULL,          -- the argv template as it was at submit time
    needs           text[] NOT NULL DEFAULT '{}',
    attempt         int NOT NULL DEFAULT 0,  -- attempts spent (an interrupted one is given back)
    max_attempts    int NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    claim           bigint,                  -- fencing token of the current claim = attempts.id
    node            text,
    node_session    uuid,
    lease_until     timestamptz,
    not_before      timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    progress        real,                    -- percent
    fps             real,
    speed           real,
    eta_s           real,
    out_time_s      real,
    duration_s      real,
    exit_code       int,
    reason          text,
    submitted_by    text,
    meta            jsonb NOT NULL DEFAULT '{}',
    revision        bigint NOT NULL DEFAULT nextval('ffdesk_revision'),
    -- The writing transaction. Revisions are drawn before commit, so a consumer that only
    -- asks "revision > last seen" could skip a row whose transaction commits late; asking
    -- "xid >= xmin of my previous snapshot" cannot (see ffdesk/db/changes.py).
    xid             xid8 NOT NULL DEFAULT pg_current_xact_id()
);

-- The claim reads only queued rows, in claim order: a small partial index stays hot.
CREATE INDEX jobs_claim_idx ON jobs (priority DESC, id) WHERE state = 'queued';
CREATE INDEX jobs_running_idx ON jobs (node_session) WHERE state = 'running';
CREATE INDEX jobs_lease_idx ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_revision_idx ON jobs (revision);
CREATE INDEX jobs_xid_idx ON jobs (xid);
CREATE INDEX jobs_state_idx ON jobs (state, id);

CREATE TABLE attempts (
    id                  bigint PRIMARY KEY,      -- the claim token
    job_id              bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq                 int NOT NULL,            -- jobs.attempt when claimed
    node                text NOT NULL,
    node_session        uuid NOT NULL,
    host                text,
    claimed_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    outcome             text,                    -- succeeded, failed, canceled, lost, interrupted
    counted             boolean NOT NULL DEFAULT true,
    exit_code           int,
    reason              text,
    argv                jsonb,
    ffmpeg_version      text,
    ffmpeg_sha256       text,
    ffmpeg_fingerprint  text,
    input_probe         jsonb,
    stderr              bytea,                   -- zlib-compressed, byte-exact
    stderr_bytes        int
);
CREATE INDEX attempts_job_idx ON attempts (job_id, id);

CREATE TABLE events (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    job_id  bigint,
    node    text,
    kind    text NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_job_idx ON events (job_id, id);

-- A new revision for every real change. Lease renewals alone are not news: they would make
-- every consumer re-read every running job at every heartbeat.
CREATE FUNCTION ffdesk_bump_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (to_jsonb(NEW) - 'revision' - 'xid' - 'lease_until' - 'heartbeat_at'
                          - 'cpu_percent' - 'mem_percent')
           = (to_jsonb(OLD) - 'revision' - 'xid' - 'lease_until' - 'heartbeat_at'
                            - 'cpu_percent' - 'mem_percent') THEN
            NEW.revision := OLD.revision;
            NEW.xid := OLD.xid;
            RETURN NEW;
        END IF;
    END IF;
    NEW.revision := nextval('ffdesk_revision');
    NEW.xid := pg_current_xact_id();
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_revision BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION ffdesk_bump_revision();
CREATE TRIGGER nodes_revision BEFORE UPDATE ON nodes
    FOR EACH ROW EXECUTE FUNCTION ffdesk_bump_revision();

-- One NOTIFY per statement (not per row: NOTIFY serializes commits), sent in the same
-- transaction as the change. Payload: kind, count, highest revision, whether any row is now
-- queued (wakes idle nodes), and (id, state) pairs when few enough to stay far below 8000 bytes.
CREATE FUNCTION ffdesk_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    -- Only rows whose revision moved (the revision trigger keeps it for lease renewals).
    IF TG_TABLE_NAME = 'jobs' THEN
        SELECT json_build_object(
                   'k', 'job', 'n', count(*), 'rev', max(n.revision),
                   'q', coalesce(bool_or(n.state = 'queued'), false),
                   'ids', CASE WHEN count(*) <= 40
                               THEN json_agg(json_build_array(n.id, n.state) ORDER BY n.id) END)::text
          INTO payload
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE n.revision <> o.revision
        HAVING count(*) > 0;
    ELSE
        SELECT json_build_object(
                   'k', 'node', 'n', count(*), 'rev', max(n.revision),
                   'ids', CASE WHEN count(*) <= 40
                               THEN json_agg(json_build_array(n.identifier, n.state)) END)::text
          INTO payload
          FROM new_rows n JOIN old_rows o ON o.identifier = n.identifier
         WHERE n.revision <> o.revision
        HAVING count(*) > 0;
    END IF;
    IF payload IS NOT NULL THEN
        PERFORM pg_notify('ffdesk', payload);
    END IF;
    RETURN NULL;
END $$;

-- Transition tables need separate triggers per event; the function checks TG_OP.
CREATE FUNCTION ffdesk_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    IF TG_TABLE_NAME = 'jobs' THEN
        SELECT json_build_object(
                   'k', 'job', 'n', count(*), 'rev', max(n.revision),
                   'q', coalesce(bool_or(n.state = 'queued'), false),
                   'ids', CASE WHEN count(*) <= 40
                               THEN json_agg(json_build_array(n.id, n.state) ORDER BY n.id) END)::text
          INTO payload FROM new_rows n HAVING count(*) > 0;
    ELSE
        SELECT json_build_object(
                   'k', 'node', 'n', count(*), 'rev', max(n.revision),
                   'ids', CASE WHEN count(*) <= 40
                               THEN json_agg(json_build_array(n.identifier, n.state)) END)::text
          INTO payload FROM new_rows n HAVING count(*) > 0;
    END IF;
    IF payload IS NOT NULL THEN
        PERFORM pg_notify('ffdesk', payload);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ffdesk_notify_insert();
CREATE TRIGGER jobs_notify_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ffdesk_notify_change();
CREATE TRIGGER nodes_notify_insert AFTER INSERT ON nodes
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ffdesk_notify_insert();
CREATE TRIGGER nodes_notify_update AFTER UPDATE ON nodes
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ffdesk_notify_change();
