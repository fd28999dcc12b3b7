-- ffdesk schema 7: batches and job dependencies.
--
-- A dependency is kept as a counter on the dependent (deps_pending = dependencies not yet
-- succeeded), maintained by a trigger in the same transaction as the dependency's own state
-- change. The claim just asks deps_pending = 0 (no dependency polling anywhere), and the
-- trigger's UPDATE of the dependents sends the usual NOTIFY with "queued" in it, so idle
-- nodes wake the moment a job becomes runnable.

CREATE TABLE batches (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text,
    state       text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'finished')),
    finished_at timestamptz
);

ALTER TABLE jobs
    ADD COLUMN batch_id     bigint REFERENCES batches (id),
    ADD COLUMN depends_on   bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN deps_pending int NOT NULL DEFAULT 0;

CREATE INDEX jobs_batch_idx ON jobs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_depends_idx ON jobs USING gin (depends_on);

CREATE FUNCTION ffdesk_job_state_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'succeeded' THEN
        -- One dependency fewer to wait for.
        UPDATE jobs SET deps_pending = greatest(deps_pending - 1, 0)
         WHERE depends_on @> ARRAY[NEW.id] AND state = 'queued';
    ELSIF NEW.state IN ('failed', 'dead', 'canceled') THEN
        -- Dependents can never run: cancel them, saying why (recursively, through this
        -- same trigger on their rows).
        WITH gone AS (
            UPDATE jobs SET state = 'canceled', finished_at = clock_timestamp(),
                   reason = 'dependency #' || NEW.id || ' ' || NEW.state,
                   lease_until = NULL, eta_s = NULL
             WHERE depends_on @> ARRAY[NEW.id] AND state = 'queued'
            RETURNING id
        )
        INSERT INTO events (job_id, kind, detail)
        SELECT id, 'canceled', jsonb_build_object('dependency', NEW.id, 'state', NEW.state)
          FROM gone;
    ELSIF NEW.state = 'queued' AND OLD.state IN ('failed', 'dead', 'canceled') THEN
        -- Reprocessed: the dependents canceled because of it come back, waiting for every
        -- dependency that has not succeeded (recursively again).
        WITH back AS (
            UPDATE jobs d SET state = 'queued', finished_at = NULL, reason = NULL,
                   attempt = 0, not_before = now(),
                   deps_pending = (SELECT count(*) FROM jobs x
                                    WHERE x.id = ANY(d.depends_on)
                                      AND x.id <> NEW.id AND x.state <> 'succeeded') + 1
             WHERE d.depends_on @> ARRAY[NEW.id] AND d.state = 'canceled'
               AND d.reason LIKE 'dependency #' || NEW.id || ' %'
            RETURNING d.id
        )
        INSERT INTO events (job_id, kind, detail)
        SELECT id, 'revived', jsonb_build_object('dependency', NEW.id) FROM back;
    END IF;

    RETURN NULL;
END $$;

CREATE TRIGGER jobs_state_changed AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION ffdesk_job_state_changed();

-- Batches are judged at commit (a deferred trigger): after every event the transaction
-- writes about its jobs, so "batch finished" comes after the last job's own "succeeded".
CREATE FUNCTION ffdesk_batch_progress() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    b record;
BEGIN
    IF NEW.batch_id IS NOT NULL THEN
        IF NEW.state IN ('queued', 'running') THEN
            UPDATE batches SET state = 'open', finished_at = NULL
             WHERE id = NEW.batch_id AND state = 'finished';
        ELSE
            -- The batch row lock serializes the last jobs of a batch finishing at the same
            -- time: whoever checks second sees the first one's commit (read committed takes
            -- a new snapshot per statement) and sends the one batch-finished event.
            SELECT * INTO b FROM batches WHERE id = NEW.batch_id FOR UPDATE;
            IF b.state = 'open' AND NOT EXISTS (
                    SELECT 1 FROM jobs WHERE batch_id = NEW.batch_id
                                         AND state IN ('queued', 'running')) THEN
                UPDATE batches SET state = 'finished', finished_at = clock_timestamp()
                 WHERE id = NEW.batch_id;
                INSERT INTO events (kind, detail)
                SELECT 'batch-finished',
                       jsonb_build_object(
                           'batch', NEW.batch_id, 'name', b.name,
                           'done', count(*) FILTER (WHERE state = 'succeeded'),
                           'failed', count(*) FILTER (WHERE state IN ('failed', 'dead')),
                           'canceled', count(*) FILTER (WHERE state = 'canceled'),
                           'total', count(*))
                  FROM jobs WHERE batch_id = NEW.batch_id;
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER jobs_batch_progress AFTER UPDATE OF state ON jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.batch_id IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION ffdesk_batch_progress();
