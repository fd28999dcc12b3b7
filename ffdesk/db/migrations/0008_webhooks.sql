-- ffdesk schema 8: webhooks, delivered from an outbox in the database.
--
-- A trigger on events turns each event someone subscribed to into one delivery row per
-- matching webhook, in the transaction that records the event: when the event is there, so is
-- its delivery, whatever code path wrote it and whether or not its node dies a moment later.
--
-- Any node delivers: it claims due deliveries with FOR UPDATE SKIP LOCKED and a lease
-- (claimed_by, lease_until), POSTs them and records the attempt; a node that dies mid-delivery
-- loses nothing, another one takes the delivery once the lease has run out. Delivery is
-- at-least-once: a receiver de-duplicates on the delivery id (header X-Ffdesk-Delivery).

CREATE TABLE webhooks (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url             text NOT NULL CHECK (url ~* '^https?://[^/?#]+'),
    events          text[] NOT NULL CHECK (cardinality(events) > 0),
    preset          text,               -- only events of jobs with this preset; NULL: all
    secret          text NOT NULL,      -- HMAC key; never shown again after creation
    enabled         boolean NOT NULL DEFAULT true,
    max_attempts    int NOT NULL DEFAULT 8 CHECK (max_attempts BETWEEN 1 AND 50),
    retry_base_s    real NOT NULL DEFAULT 10 CHECK (retry_base_s > 0),  -- doubles per attempt
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text
);

-- Which event kinds (events.kind, and detail containing `match`) are which public event.
-- A new kind becomes deliverable with one INSERT here.
CREATE TABLE webhook_event_map (
    kind    text NOT NULL,
    match   jsonb NOT NULL DEFAULT '{}',
    event   text NOT NULL,
    PRIMARY KEY (kind, match)
);
INSERT INTO webhook_event_map (kind, match, event) VALUES
    ('succeeded', '{}', 'job.succeeded'),
    ('failed', '{}', 'job.failed'),
    ('dead', '{}', 'job.dead'),
    ('rescue', '{"state": "dead"}', 'job.dead'),   -- its node was lost on the last attempt
    ('batch-finished', '{}', 'batch.finished'),
    ('node-lost', '{}', 'node.offline'),
    ('node-quarantined', '{}', 'node.quarantined');

CREATE TABLE webhook_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event           text NOT NULL,      -- job.succeeded, ..., ping
    event_id        bigint,             -- the events row; NULL for a test ping
    job_id          bigint,
    payload         jsonb NOT NULL,     -- taken when the event happened (job, node, batch)
    created_at      timestamptz NOT NULL DEFAULT now(),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        int NOT NULL DEFAULT 0,  -- claims so far; (id, attempts) fences a claim
    max_attempts    int NOT NULL,
    next_at         timestamptz NOT NULL DEFAULT now(),  -- due (retries wait out a backoff)
    claimed_by      text,               -- node delivering it now
    lease_until     timestamptz,        -- then another node may take it
    last_status     int,
    last_error      text,
    finished_at     timestamptz,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_at, id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_hook_idx ON webhook_deliveries (webhook_id, id);

CREATE TABLE webhook_attempts (
    delivery_id     bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt         int NOT NULL,
    node            text NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),  -- claimed (database clock)
    finished_at     timestamptz,        -- NULL: in flight, or its node was lost
    http_status     int,
    error           text,               -- network error, or a non-2xx answer's first bytes
    duration_ms     real,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE FUNCTION ffdesk_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queued int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhooks WHERE enabled) THEN
        RETURN NULL;  -- the common case costs one index-less look at a tiny table
    END IF;
    INSERT INTO webhook_deliveries (webhook_id, event, event_id, job_id, payload, max_attempts)
    SELECT DISTINCT ON (w.id, e.id) w.id, m.event, e.id, e.job_id,
           jsonb_build_object('occurred_at', e.at, 'detail', e.detail)
           || CASE WHEN j.id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('job',
                  jsonb_build_object(
                      'id', j.id, 'state', j.state, 'input', j.input, 'output', j.output,
                      'preset', j.preset, 'reason', j.reason, 'attempt', j.attempt,
                      'max_attempts', j.max_attempts, 'node', j.node, 'exit_code', j.exit_code,
                      'failure_kind', j.failure_kind, 'written', j.written,
                      'priority', j.priority, 'tags', j.tags, 'submitted_by', j.submitted_by,
                      'batch_id', j.batch_id,
                      'created_at', j.created_at, 'started_at', j.started_at,
                      'finished_at', j.finished_at, 'duration_s', j.duration_s)) END
           || CASE WHEN j.id IS NOT NULL OR n.identifier IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('node', jsonb_build_object(
                      'identifier', n.identifier, 'host', n.host, 'state', n.state,
                      'reason', n.state_reason, 'heartbeat_at', n.heartbeat_at,
                      'app_version', n.app_version, 'ffmpeg_version', n.ffmpeg_version)) END
           || CASE WHEN b.id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('batch',
                  e.detail || jsonb_build_object(
                      'id', b.id, 'name', b.name, 'created_at', b.created_at,
                      'created_by', b.created_by, 'finished_at', b.finished_at)) END,
           w.max_attempts
      FROM new_rows e
      JOIN webhook_event_map m ON m.kind = e.kind AND e.detail @> m.match
      LEFT JOIN jobs j ON j.id = e.job_id
      LEFT JOIN nodes n ON n.identifier = e.node
      LEFT JOIN batches b ON m.event LIKE 'batch.%' AND b.id::text = e.detail ->> 'batch'
      JOIN webhooks w ON w.enabled AND m.event = ANY (w.events)
                     AND (w.preset IS NULL OR w.preset = coalesce(j.preset, e.detail ->> 'preset'))
     ORDER BY w.id, e.id
    ON CONFLICT (webhook_id, event_id) DO NOTHING;
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM pg_notify('ffdesk', '{"k":"webhook"}');  -- wakes the nodes' delivery loops
    END IF;
    RETURN NULL;
END $$;

-- Per statement, not per row: the claim, the rescuer and enqueue insert many events at once.
CREATE TRIGGER events_webhook_outbox AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ffdesk_webhook_outbox();
